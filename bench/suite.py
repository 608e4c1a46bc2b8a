"""The seed tutorial's Gunicorn setup, ours, and the floor, measured in one run on this machine.

Three configurations (CONFIGS), each behind its own copy of the same nginx (this repo's
configuration, its per-address limits lifted for the load), on the same Postgres and Redis:
- seed: the app under the tutorial's Gunicorn configuration (bench/seed_gunicorn.conf.py);
- ours: the app under gunicorn.conf.py with its defaults, Prometheus metrics on;
- floor: bare Flask (bench/floor.py) under the same gunicorn.conf.py and launcher as ours, so
  ours / floor is what the kit itself costs.
Two more run only the authenticated read:
- floor_trips: the floor plus the read's two round trips, a Redis GET of ours' session and the
  page's query, with the drivers alone (bench/floor_trips.py): the least such a read can cost,
  so ours / floor_trips is what the kit's layers cost;
- ours with metrics off (METRICS_PORT=0), beside ours, for metrics' share of its app CPU.

Measured: cold start, /health, an authenticated read and write at 64 connections (wrk), a
fixed offered rate and a sweep of rates (hey, every latency kept), the read again with each
round trip to Postgres delayed (a latency-injecting proxy), and /health with workers recycled
every 1000 requests, as the seed recycles them. The app's CPU comes from /proc (the master,
its workers, and the workers it reaped), so it is per request, whatever the worker model;
memory is the workers' peak RSS, and the PSS of the master and of its largest worker after
the read.

The configurations run side by side, and each workload runs on each in turn, `--rounds` times,
the order rotated each round: a machine that slows down for a minute slows all of them, not
whichever ran then. Each figure is the median of its trials; errors are summed.

Usage: .venv/bin/python -m bench [--seconds 10] [--rounds 5] [--rate 150] [--sweep 50,100,...] [--delay 0.04]
Writes bench/results/<UTC time>.json (the figures, ours / seed in `ratios`, ours / floor in
`floor_ratios`, ours / floor_trips in `floor_trips_ratios`, and `metrics_cost_percent`) and
prints the table; `make bench-report` turns the newest result into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import secrets
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

from app.capacity import available_cpus
from harness import REPO
from harness.faults import FaultProxy
from harness.https import SERVER_NAME, Client, tls_context
from harness.nginx import NginxServer
from harness.process import child_pids, find_binary, stop_process
from harness.servers import GunicornServer, PostgresServer, RedisServer, migrate_to_head
from harness.wait import wait_for

from . import floor

SEED_CONFIG = REPO / "bench" / "seed_gunicorn.conf.py"
OUR_CONFIG = REPO / "gunicorn.conf.py"
KIT_APP = "wsgi:app"


@dataclass(frozen=True)
class Configuration:
    """One setup under test: its Gunicorn configuration file, the app module it serves, what it
    sets in the environment over the bench's, and the measurements it takes (`results` keys:
    "cold_start_s", a workload's name, "read_sweep"), None for every one."""

    config: Path
    app_module: str = KIT_APP
    env: dict[str, str] = field(default_factory=dict)
    measures: frozenset[str] | None = None

    def takes(self, measurement: str) -> bool:
        return self.measures is None or measurement in self.measures


CONFIGS = {
    "seed": Configuration(SEED_CONFIG),
    "ours": Configuration(OUR_CONFIG),
    "floor": Configuration(OUR_CONFIG, "bench.floor:app"),
    "floor_trips": Configuration(OUR_CONFIG, "bench.floor_trips:app", measures=frozenset({"read_c64"})),
    # ours with metrics off (no listener, no multiprocess files, no request counted), reading at
    # the same time as ours (beside_ours): the pair's app CPU gives metrics_cost_percent
    "ours_nometrics": Configuration(OUR_CONFIG, env={"METRICS_PORT": "0"}, measures=frozenset({"read_beside_ours"})),
}
RESULTS = REPO / "bench" / "results"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PASSWORD = "correct horse battery staple"
# the bench user's notes: a page of them, as many as the floor's page holds
NOTES_PER_USER = floor.NOTES
# wrk's authenticated write: one note per request
WRITE_SCRIPT = ('wrk.method = "POST"\nwrk.body = \'{"title": "bench", "body": "written by wrk"}\'\n'
                'wrk.headers["Content-Type"] = "application/json"\n')


def cpu_seconds(master: int) -> float:
    """CPU used so far by a Gunicorn master, its live workers, and the workers it reaped."""
    total = 0
    for pid in (master, *child_pids(master)):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        own = int(fields[11]) + int(fields[12])  # utime, stime
        reaped = int(fields[13]) + int(fields[14]) if pid == master else 0  # cutime, cstime
        total += own + reaped
    return total / CLOCK_TICKS


def peak_worker_rss_mb(master: int) -> float:
    peaks = []
    for pid in child_pids(master):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if peak := re.search(r"VmHWM:\s+(\d+) kB", status):  # none once a recycled worker is a zombie
            peaks.append(int(peak.group(1)) / 1024)
    return round(max(peaks, default=0), 1)


def pss_mb(pid: int) -> float:
    """A process's proportional set size: its own pages, plus its share of each page it shares
    (copy-on-write with the master it was forked from, the libraries), so the PSS of a master
    and its workers add up to what they use together, which their RSS overstates. 0 once it
    is gone or a zombie."""
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0.0
    found = re.search(r"^Pss:\s+(\d+) kB", rollup, re.M)
    return int(found.group(1)) / 1024 if found else 0.0


def wrk(url: str, seconds: float, connections: int, headers: dict[str, str], script: str | None = None) -> dict:
    command = [find_binary("wrk"), "--threads", "2", "--connections", str(connections), "--duration",
               f"{seconds:g}s", "--timeout", "10s", "--latency"]
    for name, value in headers.items():
        command += ["--header", f"{name}: {value}"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        if script:
            lua.write(script)
            lua.flush()
            command += ["--script", lua.name]
        output = subprocess.run([*command, url], capture_output=True, text=True, timeout=seconds + 60).stdout
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    non_2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", output)) else 0
    socket_errors = sum(map(int, m.groups())) if (m := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)) else 0

    def latency(percent: str) -> float:
        value, unit = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)", output, re.M).groups()
        return round(float(value) * {"us": 0.001, "ms": 1, "s": 1000}[unit], 2)

    return {"requests": requests, "rps": round(float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)), 1),
            "p50_ms": latency("50"), "p99_ms": latency("99"), "errors": non_2xx + socket_errors}


def hey_at_rate(url: str, rate: int, seconds: float, headers: dict[str, str]) -> dict:
    """A fixed offered rate, spread evenly, every latency kept. hey's workers tick in step: one hey
    with 15 workers at 10/s sends 15 requests at once every 100 ms, which measures bursts (p50
    27.7 ms at 150/s, against 7.6 ms from 3 such workers). So each worker is a hey of its own at
    10/s, started 1/rate s after the one before: the requests arrive one every 1/rate s."""
    workers = max(1, rate // 10)
    # hey sends its -host as both Host and TLS server name (SNI); nginx wants both to be the name
    command = [find_binary("hey"), "-z", f"{seconds:g}s", "-c", "1", "-q", str(rate / workers),
               "-t", "10", "-o", "csv", "-host", SERVER_NAME]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    clients: list[subprocess.Popen] = []
    started = time.monotonic()
    try:
        for number in range(workers):
            time.sleep(max(0.0, started + number / rate - time.monotonic()))  # paces the starts
            clients.append(subprocess.Popen([*command, url], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                            text=True))
        outputs = [client.communicate(timeout=seconds + 60)[0] for client in clients]
    finally:
        for client in clients:
            stop_process(client)
    rows = [row for output in outputs for row in csv.DictReader(io.StringIO(output))]
    latencies = sorted(float(row["response-time"]) * 1000 for row in rows)

    def percentile(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(len(latencies) * p / 100))], 2) if latencies else 0.0

    return {"offered": rate, "requests": len(rows), "rps": round(len(rows) / seconds, 1),
            "p50_ms": percentile(50), "p99_ms": percentile(99), "p999_ms": percentile(99.9),
            "errors": sum(not row["status-code"].startswith("2") for row in rows)}


class Site:
    """One configuration (CONFIGS) serving its app behind nginx, and a signed-in user (none for
    the floor)."""

    def __init__(self, name: str, app_env: dict[str, str]):
        self.name = name
        self.configuration = CONFIGS[name]
        self.gunicorn = GunicornServer({**app_env, **self.configuration.env},
                                       app_module=self.configuration.app_module, config=self.configuration.config)
        # the configuration's own worker count: the harness's single-worker default is for tests
        self.gunicorn.env.pop("WEB_CONCURRENCY")
        self.nginx = NginxServer(self.gunicorn.port, load_test=True)
        self.cookie = ""

    def start(self) -> float:
        """Start both; returns the cold start: Gunicorn's launch to the first 200 through nginx."""
        self.nginx.start()
        client = self.nginx.client(timeout=2)
        started = time.monotonic()
        self.gunicorn.start(timeout=60)

        def ready() -> bool:
            try:
                return client.request("GET", "/health/ready").status == 200
            except OSError:
                return False

        wait_for(ready, 60, f"{self.name}: readiness through nginx", interval=0.01)
        cold_start = round(time.monotonic() - started, 2)
        # WEB_CONCURRENCY is popped, so GunicornServer.start waited for one answering worker; the rest
        # are still forking (the seed's up to 0.1 s apart), and a workload must meet them all
        workers = self.configured_workers()
        wait_for(lambda: len(self.gunicorn.worker_pids()) == workers, 60, f"{self.name}: {workers} workers")
        return cold_start

    def configured_workers(self) -> int:
        """The worker count the configuration picks itself, as it computes it."""
        if self.configuration.config == SEED_CONFIG:  # cpu_count() * 2 + 1
            return int(self.gunicorn.env.get("GUNICORN_WORKERS", os.cpu_count() * 2 + 1))
        return available_cpus()  # gunicorn.conf.py without WEB_CONCURRENCY: ours, the floor

    @property
    def url(self) -> str:
        return f"https://localhost:{self.nginx.https_port}"

    @property
    def auth(self) -> dict[str, str]:
        return {"Cookie": self.cookie}

    @property
    def by_address(self) -> str:
        """The read's URL for hey, which takes the name separately (-host)."""
        return f"https://127.0.0.1:{self.nginx.https_port}/api/notes"

    def sign_in(self) -> None:
        if self.configuration.app_module != KIT_APP:
            return  # the floors have no accounts; floor_trips reads as ours (reading_as)
        client = Client(self.nginx.https_port, tls_context(self.nginx.cafile))
        credentials = {"email": f"bench-{secrets.token_hex(4)}@example.com", "password": PASSWORD}
        assert client.request("POST", "/api/auth/register", credentials).status == 201
        assert client.request("POST", "/api/auth/login", credentials).status == 200
        for n in range(NOTES_PER_USER):
            client.request("POST", "/api/notes", {"title": f"note {n}", "body": "x" * 200})
        self.cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())

    def reading_as(self, ours: Site) -> None:
        """Read with ours' session (floor_trips: the same record, the same rows), and check
        that the page is the one ours answers."""
        self.cookie = ours.cookie
        pages = []
        for site in (ours, self):
            client = Client(site.nginx.https_port, tls_context(site.nginx.cafile))
            response = client.request("GET", "/api/notes", headers=site.auth)
            pages.append((response.status, response.json()))
        if pages[0] != pages[1]:
            raise SystemExit(f"{self.name} does not read the page ours reads: {pages[1]} against {pages[0]}")

    def measured(self, run) -> dict:
        """Run a workload; add the app's CPU per request and its workers' peak memory."""
        before = cpu_seconds(self.gunicorn.proc.pid)
        boots = self.boots()
        result = run()
        cpu = cpu_seconds(self.gunicorn.proc.pid) - before
        result["cpu_ms_per_request"] = round(cpu * 1000 / max(result["requests"], 1), 3)
        result["worker_rss_mb"] = peak_worker_rss_mb(self.gunicorn.proc.pid)
        result["worker_restarts"] = self.boots() - boots
        return result

    def memory(self) -> dict[str, float]:
        """The largest worker's PSS and the master's, now: read right after a workload, while
        its workers are alive."""
        master = self.gunicorn.proc.pid
        return {"worker_pss_mb": round(max(map(pss_mb, child_pids(master)), default=0), 1),
                "master_pss_mb": round(pss_mb(master), 1)}

    def boots(self) -> int:
        return sum("Booting worker" in line for line in self.gunicorn.log_lines())

    def close(self) -> None:
        self.nginx.close()
        self.gunicorn.close()


def app_settings(database_url: str, redis_url: str) -> dict[str, str]:
    """The app's settings for a bench: production, on the given Postgres and Redis."""
    return {"APP_ENV": "production", "SECRET_KEY": secrets.token_urlsafe(48), "DATABASE_URL": database_url,
            "REDIS_URL": redis_url, "PROXY_FIX_HOPS": "1",
            # the harness's nginx does the limiting in production; the bench measures throughput
            # (its writes all come from one user)
            "LOGIN_FAILURES_PER_ADDRESS": "1000000", "NOTES_PER_USER_PER_MINUTE": "100000000"}


def median_of(trials: list[dict]) -> dict:
    """Each figure's median over the trials; errors and requests summed, every trial's requests/s
    kept."""
    figures = {key: round(statistics.median(trial[key] for trial in trials), 3)
               for key, value in trials[0].items() if isinstance(value, (int, float))}
    for total in ("errors", "requests", "worker_restarts"):
        if total in figures:
            figures[total] = sum(trial[total] for trial in trials)
    figures["rps_trials"] = [trial["rps"] for trial in trials]
    return figures


def taking(measurement: str, names: list[str]) -> list[str]:
    """Those of the configurations `names` that take `measurement`."""
    return [name for name in names if CONFIGS[name].takes(measurement)]


def in_turn(names: list[str], number: int) -> list[str]:
    """`names` in round `number`'s order: rotated by one every round, so none always goes first."""
    first = number % len(names)
    return names[first:] + names[:first]


def alternated(sites: dict[str, Site], workloads: dict, rounds: int) -> dict[str, dict]:
    """Each workload, in order, on every site that takes it in turn, `rounds` times, the order
    rotated each round. Workload by workload: the writes come last, so no read runs on the
    thousands of rows they add (Postgres plans those reads from statistics of a table of 40 rows
    until the next ANALYZE: a scan and a sort of the user's rows instead of 21 from the index,
    measured at 385-405 against 512-558 reads/s)."""
    trials: dict[str, dict[str, list]] = {name: {} for name in sites}
    for workload, run in workloads.items():
        names = taking(workload, list(sites))
        for number in range(rounds):
            for name in in_turn(names, number):
                site = sites[name]
                trials[name].setdefault(workload, []).append(site.measured(partial(run, site)))
    return {name: {workload: median_of(runs) for workload, runs in by_workload.items()}
            for name, by_workload in trials.items()}


def running(env: dict[str, str], measurements: list[str]):
    """One site per configuration that takes any of `measurements` (started)."""
    return started(env, [name for name in CONFIGS
                         if any(CONFIGS[name].takes(measurement) for measurement in measurements)])


@contextmanager
def started(env: dict[str, str], names: list[str]) -> Iterator[dict[str, Site]]:
    """A site of each of the configurations `names`, started in that order and all running at
    once; all closed together at the end."""
    sites: dict[str, Site] = {}
    try:
        for name in names:
            sites[name] = Site(name, env)
            sites[name].start()
        yield sites
    finally:
        # all at once: each stop waits for its workers to finish (a gevent worker notices the
        # stop within a second) and exit, 1.3-2.1 s each on this machine idle; nothing is
        # measured meanwhile
        with ThreadPoolExecutor() as pool:
            list(pool.map(Site.close, sites.values()))


def cold_starts(app_env: dict[str, str], rounds: int) -> dict[str, float]:
    """Gunicorn's launch to the first 200 through nginx: the median of `rounds` fresh starts each."""
    names = taking("cold_start_s", list(CONFIGS))
    times: dict[str, list[float]] = {name: [] for name in names}
    for number in range(rounds):
        for name in in_turn(names, number):
            site = Site(name, app_env)
            try:
                times[name].append(site.start())
            finally:
                site.close()
    return {name: round(statistics.median(values), 2) for name, values in times.items()}


def measure(postgres: PostgresServer, app_env: dict[str, str], slow_env: dict[str, str], options) -> dict[str, dict]:
    seconds, rounds = options.seconds, options.rounds
    results: dict[str, dict] = {name: {} for name in CONFIGS}
    for name, cold in cold_starts(app_env, rounds).items():
        results[name]["cold_start_s"] = cold
    workloads = {
        "health_c64": lambda site: wrk(f"{site.url}/health", seconds, 64, {}),
        "read_c64": lambda site: {**wrk(f"{site.url}/api/notes", seconds, 64, site.auth), **site.memory()},
        "read_fixed_rate": lambda site: hey_at_rate(site.by_address, options.rate, seconds, site.auth),
        "write_c64": lambda site: wrk(f"{site.url}/api/notes", seconds, 64, site.auth, WRITE_SCRIPT),
    }
    with running(app_env, [*workloads, "read_sweep"]) as sites:
        for site in sites.values():
            site.sign_in()
        if "floor_trips" in sites:
            sites["floor_trips"].reading_as(sites["ours"])
        for name, figures in alternated(sites, workloads, rounds).items():
            results[name].update(figures)
        # statistics for the rows the writes added, as autovacuum would gather them within a minute
        postgres.psql("ANALYZE", "bench")
        for name in taking("read_sweep", list(sites)):  # the latency plot's points, once each
            site = sites[name]
            results[name]["read_sweep"] = [hey_at_rate(site.by_address, rate, options.sweep_seconds,
                                                       site.auth) for rate in options.sweep]
        cookies = {name: site.cookie for name, site in sites.items()}
    # two rounds more than the rest: the share is a few percent, and one pair's ratio of the same
    # tree against itself ranged 0.96-1.33 (7 pairs, bench/changes.md)
    results["ours_nometrics"]["read_beside_ours"] = beside_ours("ours_nometrics", app_env, workloads["read_c64"],
                                                                rounds + 2)
    workloads = {"read_slow_db_c100": lambda site: wrk(f"{site.url}/api/notes", seconds, 100, site.auth)}
    with running(slow_env, list(workloads)) as sites:
        # the same users and sessions (the same database and Redis), without slow sign-up round trips
        for name, site in sites.items():
            site.cookie = cookies[name]
        for name, figures in alternated(sites, workloads, rounds).items():
            results[name].update(figures)
    # Worker recycling as the seed configures it (every 1000 requests), for all: what a
    # recycled worker costs each setup (a fork from a preloaded master, or a fresh import).
    workloads = {"health_recycling_c64": lambda site: wrk(f"{site.url}/health", seconds, 64, {})}
    recycling_env = {**app_env, "GUNICORN_MAX_REQUESTS": "1000", "GUNICORN_MAX_REQUESTS_JITTER": "50"}
    with running(recycling_env, list(workloads)) as sites:
        for name, figures in alternated(sites, workloads, rounds).items():
            results[name].update(figures)
    return results


def ratios(base: dict, ours: dict) -> dict:
    """Ours over a base's (the seed's, the floor's), for every figure both have."""
    table = {}
    for measurement, figures in ours.items():
        if isinstance(figures, dict) and isinstance(base.get(measurement), dict):
            for key, value in figures.items():
                below = base[measurement].get(key)
                if isinstance(value, (int, float)) and below:
                    table[f"{measurement}.{key}"] = round(value / below, 2)
        elif isinstance(figures, (int, float)) and base.get(measurement):
            table[measurement] = round(figures / base[measurement], 2)
    return table


def together(sites: list[Site], run, rounds: int, first: int = 0) -> list[list[dict]]:
    """`run` on every site at the same time, `rounds` times: each round's trials meet the same
    machine. One after the other, a 10 % difference hides in this machine's drift (the same read
    measured 2.3-3.9 ms of app CPU in consecutive trials; bench/changes.md); the ratio within a
    round does not. Each round starts them in another order (in_turn; `first` is the first
    round's number), so that neither side always starts first. One list of trials, in `sites`'
    order, per round."""
    measured = []
    for number in range(first, first + rounds):
        order = in_turn(list(range(len(sites))), number)
        with ThreadPoolExecutor(len(sites)) as pool:
            trials = {index: pool.submit(sites[index].measured, partial(run, sites[index])) for index in order}
        measured.append([trials[index].result() for index in range(len(sites))])
    return measured


def paired_cpu_ratio(pairs) -> float:
    """The median over pairs of trials taken together (`together`) of the second's app CPU per
    request over the first's."""
    return statistics.median(second["cpu_ms_per_request"] / first["cpu_ms_per_request"] for first, second in pairs)


def beside_ours(name: str, env: dict[str, str], run, rounds: int) -> dict:
    """`run` on a site of the configuration `name` and on ours together, `rounds` times, each
    time on a pair started afresh (the two started in turn) and signed in. Figures are medians
    over the rounds; `cpu_ratio` is the median of the pairs' site / ours app CPU per request.

    A fresh pair each round, because a site's app CPU per request sits a few percent above or
    below another's of the same configuration for as long as both run: of three copies of ours
    read together 9 times (with ours without metrics), one cost more than the round's mean in 8
    (bench/changes.md). With the same two sites in every round, that offset would be counted as
    the difference."""
    pairs = []
    for number in range(rounds):
        with started(env, in_turn(["ours", name], number)) as sites:
            for site in sites.values():
                site.sign_in()
                wrk(f"{site.url}/api/notes", 1, 64, site.auth)  # each worker's first connections
            pairs += together([sites["ours"], sites[name]], run, 1, first=number)
    figures = median_of([mine for _, mine in pairs])
    figures["ours_cpu_ms_per_request"] = statistics.median(theirs["cpu_ms_per_request"] for theirs, _ in pairs)
    figures["cpu_ratio"] = round(paired_cpu_ratio(pairs), 3)
    return figures


def metrics_cost_percent(nometrics: dict) -> float:
    """Metrics' share of the read's app CPU: what ours spends per read above itself with metrics
    off, both reading at once, as a percentage of what ours spends."""
    return round((1 - nometrics["read_beside_ours"]["cpu_ratio"]) * 100, 1)


def versions() -> dict[str, str]:
    from importlib.metadata import version

    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    nginx = subprocess.run([find_binary("nginx"), "-v"], capture_output=True, text=True).stderr.strip()
    return {"machine": f"{os.cpu_count()} CPUs ({cpu})", "nginx": nginx,
            "gunicorn": version("gunicorn"), "gevent": version("gevent"), "python": os.sys.version.split()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10, help="each workload's duration")
    # 5: a p99 at c=64 is one trial's few slowest requests, and a stall of the machine in one trial
    # can double it (the seed's read: 180-347 ms over 6 trials, its write 233-1,350 ms); with 3
    # trials, one such trial on either side decided the comparison
    parser.add_argument("--rounds", type=int, default=5, help="trials of each workload per configuration")
    # 150/s: well under what either setup can serve here (the seed 420-710 authenticated reads/s
    # on 2 cores, ours 630-990, in the last two runs), so latency, not saturation, is compared
    parser.add_argument("--rate", type=int, default=150, help="the fixed offered rate, requests/s")
    parser.add_argument("--sweep", default="50,100,150,200,250,300", help="offered rates for the latency plot")
    parser.add_argument("--sweep-seconds", type=float, default=5)
    parser.add_argument("--delay", type=float, default=0.04, help="seconds added to each Postgres round trip")
    parser.add_argument("--output", type=Path, help="where the JSON goes (default: bench/results/<time>.json)")
    options = parser.parse_args()
    options.sweep = [int(rate) for rate in options.sweep.split(",") if rate]

    postgres = PostgresServer({"max_connections": "300"})
    redis = RedisServer(postgres.workdir / "redis")
    proxy = None
    try:
        postgres.start()
        redis.start()
        url = postgres.create_database("bench")
        migrate_to_head(url)
        proxy = FaultProxy(postgres.port).start()
        proxy.delay(options.delay)
        env = app_settings(url, redis.url)
        slow_env = {**env, "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{proxy.port}/bench"}
        print(f"bench: seed, ours and the floors (and ours without metrics, beside ours), {options.rounds} "
              "rounds ...", flush=True)
        results = measure(postgres, env, slow_env, options)
    finally:
        if proxy:
            proxy.close()
        redis.stop()
        postgres.close()

    settings = {"seconds": options.seconds, "rounds": options.rounds, "rate": options.rate,
                "sweep": options.sweep, "delay": options.delay}
    document = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "options": settings,
                "versions": versions(), "results": results, "ratios": ratios(results["seed"], results["ours"]),
                "floor_ratios": ratios(results["floor"], results["ours"]),
                "floor_trips_ratios": ratios(results["floor_trips"], results["ours"]),
                "metrics_cost_percent": metrics_cost_percent(results["ours_nometrics"])}
    output = options.output or RESULTS / f"{document['time'].replace(':', '')}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(document, indent=2) + "\n")
    from .report import table

    print(table(document))
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
