"""Debian's Prometheus server on a loopback port: it scrapes the targets it is given, loads the
repo's rule files (deploy/prometheus/), and answers PromQL over its HTTP API. For tests that
check what a real Prometheus makes of the service's metrics.

Waits are on its state, never on the clock: `wait_for_scrape` returns once a scrape of the job
has started after a given moment, so everything done before that moment is in what it read.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from . import REPO
from .process import find_binary, free_port, stop_process
from .wait import wait_for, wait_for_server

RULES = REPO / "deploy" / "prometheus" / "rules"


class PrometheusServer:
    """`jobs` maps a job name to (target URL, ...); every job is scraped every `interval`, and the
    rules (recording and alerting) are evaluated as often."""

    def __init__(self, jobs: dict[str, tuple[str, ...]], rule_files: tuple[Path, ...] = (), interval: str = "1s"):
        self.workdir = Path(tempfile.mkdtemp(prefix="kit-prometheus-"))
        self.port = free_port()
        self.jobs = jobs
        self.rule_files = rule_files
        self.interval = interval
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.workdir / "prometheus.log"

    def config(self) -> dict:
        scrape_configs = []
        for job, urls in self.jobs.items():
            parsed = [urllib.parse.urlsplit(url) for url in urls]
            (path,) = {target.path for target in parsed}
            scrape_configs.append({"job_name": job, "metrics_path": path,
                                   "static_configs": [{"targets": [target.netloc for target in parsed]}]})
        return {"global": {"scrape_interval": self.interval, "evaluation_interval": self.interval},
                "rule_files": [str(path) for path in self.rule_files], "scrape_configs": scrape_configs}

    def start(self) -> PrometheusServer:
        config = self.workdir / "prometheus.yml"
        config.write_text(json.dumps(self.config(), indent=2))  # JSON is YAML
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [find_binary("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={self.workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT)
        wait_for_server(self.proc, self._ready, 30, "prometheus ready", self.log)
        return self

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def query(self, expr: str) -> list[dict]:
        """An instant query, now: the result's series, each {"metric": labels, "value": [t, "v"]}."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as response:
            answer = json.load(response)
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def values(self, expr: str, *labels: str) -> dict[tuple[str, ...], float]:
        """The query's series as {(label value, ...): value}."""
        return {tuple(series["metric"].get(label, "") for label in labels): float(series["value"][1])
                for series in self.query(expr)}

    def wait_for_scrape(self, job: str, after: float, timeout: float = 30) -> None:
        """Until every target of `job` has been scraped successfully by a scrape that started
        after `after` (a time.time())."""
        def scraped() -> bool:
            # of a selector: timestamp() of anything else (`up == 1`) is the query's own time
            started = self.values(f'timestamp(up{{job="{job}"}})', "instance")
            succeeded = self.values(f'up{{job="{job}"}}', "instance")
            return len(started) == len(self.jobs[job]) and all(
                at > after and succeeded.get(instance) == 1 for instance, at in started.items())

        wait_for(scraped, timeout, f"a scrape of {job} after {time.strftime('%X', time.localtime(after))}",
                 interval=0.2)

    def close(self) -> None:
        """Stop the server and delete its data."""
        if self.proc:
            stop_process(self.proc)
        shutil.rmtree(self.workdir, ignore_errors=True)
