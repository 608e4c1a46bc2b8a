"""The seed tutorial's Gunicorn setup against ours, measured in one run on this machine.

Both run the same app behind the same nginx (this repo's configuration, its per-address
limits lifted for the load), on the same Postgres and Redis; only the Gunicorn configuration
differs (bench/seed_gunicorn.conf.py, gunicorn.conf.py with its defaults). Measured: cold start,
/health, an authenticated read and write at 64 connections (wrk), a fixed offered rate and a
sweep of rates (hey, every latency kept), the read again with each round trip to Postgres
delayed (a latency-injecting proxy), and /health with workers recycled every 1000 requests, as
the seed recycles them. The app's CPU comes from /proc (the master, its workers, and the
workers it reaped), so it is per request, whatever the worker model.

Both configurations run side by side, and each workload runs on one and then the other,
`--rounds` times, the order swapped each round: a machine that slows down for a minute slows
both, not whichever ran then. Each figure is the median of its trials; errors are summed.

Usage: .venv/bin/python -m bench [--seconds 10] [--rounds 3] [--rate 150] [--sweep 50,100,...] [--delay 0.04]
Writes bench/results/<UTC time>.json and prints the table; `make bench-report` turns the
newest result into docs/benchmarks.md.
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
from contextlib import contextmanager
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

CONFIGS = {"seed": REPO / "bench" / "seed_gunicorn.conf.py", "ours": REPO / "gunicorn.conf.py"}
RESULTS = REPO / "bench" / "results"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PASSWORD = "correct horse battery staple"
NOTES_PER_USER = 20


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
    """One Gunicorn configuration serving the app behind nginx, and a signed-in user."""

    def __init__(self, name: str, app_env: dict[str, str]):
        self.name = name
        self.gunicorn = GunicornServer(app_env, config=CONFIGS[name])
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
        if self.name == "seed":  # bench/seed_gunicorn.conf.py: cpu_count() * 2 + 1
            return int(self.gunicorn.env.get("GUNICORN_WORKERS", os.cpu_count() * 2 + 1))
        return available_cpus()  # gunicorn.conf.py without WEB_CONCURRENCY

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
        client = Client(self.nginx.https_port, tls_context(self.nginx.cafile))
        credentials = {"email": f"bench-{secrets.token_hex(4)}@example.com", "password": PASSWORD}
        assert client.request("POST", "/api/auth/register", credentials).status == 201
        assert client.request("POST", "/api/auth/login", credentials).status == 200
        for n in range(NOTES_PER_USER):
            client.request("POST", "/api/notes", {"title": f"note {n}", "body": "x" * 200})
        self.cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())

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


def in_turn(number: int) -> list[str]:
    """The configurations in round `number`'s order: swapped every round, so neither always goes
    first."""
    return list(CONFIGS) if number % 2 == 0 else list(reversed(CONFIGS))


def alternated(sites: dict[str, Site], workloads: dict, rounds: int) -> dict[str, dict]:
    """Each workload, in order, on every site in turn, `rounds` times, the order swapped each
    round. Workload by workload: the writes come last, so no read runs on the thousands of rows
    they add (Postgres plans those reads from statistics of a table of 40 rows until the next
    ANALYZE: a scan and a sort of the user's rows instead of 21 from the index, measured at
    385-405 against 512-558 reads/s)."""
    trials: dict[str, dict[str, list]] = {name: {workload: [] for workload in workloads} for name in sites}
    for workload, run in workloads.items():
        for number in range(rounds):
            for name in in_turn(number):
                site = sites[name]
                trials[name][workload].append(site.measured(partial(run, site)))
    return {name: {workload: median_of(runs) for workload, runs in by_workload.items()}
            for name, by_workload in trials.items()}


@contextmanager
def running(env: dict[str, str]) -> Iterator[dict[str, Site]]:
    """One site per configuration, both running at once; both closed at the end."""
    sites: dict[str, Site] = {}
    try:
        for name in CONFIGS:
            sites[name] = Site(name, env)
            sites[name].start()
        yield sites
    finally:
        for site in sites.values():
            site.close()


def cold_starts(app_env: dict[str, str], rounds: int) -> dict[str, float]:
    """Gunicorn's launch to the first 200 through nginx: the median of `rounds` fresh starts each."""
    times: dict[str, list[float]] = {name: [] for name in CONFIGS}
    for number in range(rounds):
        for name in in_turn(number):
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
    write = ('wrk.method = "POST"\nwrk.body = \'{"title": "bench", "body": "written by wrk"}\'\n'
             'wrk.headers["Content-Type"] = "application/json"\n')
    with running(app_env) as sites:
        for site in sites.values():
            site.sign_in()
        workloads = {
            "health_c64": lambda site: wrk(f"{site.url}/health", seconds, 64, {}),
            "read_c64": lambda site: wrk(f"{site.url}/api/notes", seconds, 64, site.auth),
            "read_fixed_rate": lambda site: hey_at_rate(site.by_address, options.rate, seconds, site.auth),
            "write_c64": lambda site: wrk(f"{site.url}/api/notes", seconds, 64, site.auth, write),
        }
        for name, figures in alternated(sites, workloads, rounds).items():
            results[name].update(figures)
        # statistics for the rows the writes added, as autovacuum would gather them within a minute
        postgres.psql("ANALYZE", "bench")
        for name, site in sites.items():  # the latency plot's points, once each
            results[name]["read_sweep"] = [hey_at_rate(site.by_address, rate, options.sweep_seconds,
                                                       site.auth) for rate in options.sweep]
        cookies = {name: site.cookie for name, site in sites.items()}
    with running(slow_env) as sites:
        # the same users and sessions (the same database and Redis), without slow sign-up round trips
        for name, site in sites.items():
            site.cookie = cookies[name]
        workloads = {"read_slow_db_c100": lambda site: wrk(f"{site.url}/api/notes", seconds, 100, site.auth)}
        for name, figures in alternated(sites, workloads, rounds).items():
            results[name].update(figures)
    # Worker recycling as the seed configures it (every 1000 requests), for both: what a
    # recycled worker costs each setup (a fork from a preloaded master, or a fresh import).
    with running({**app_env, "GUNICORN_MAX_REQUESTS": "1000", "GUNICORN_MAX_REQUESTS_JITTER": "50"}) as sites:
        workloads = {"health_recycling_c64": lambda site: wrk(f"{site.url}/health", seconds, 64, {})}
        for name, figures in alternated(sites, workloads, rounds).items():
            results[name].update(figures)
    return results


def ratios(seed: dict, ours: dict) -> dict:
    """Ours over the seed's, for every figure both have."""
    table = {}
    for workload, figures in ours.items():
        if isinstance(figures, dict) and isinstance(seed.get(workload), dict):
            for key, value in figures.items():
                base = seed[workload].get(key)
                if isinstance(value, (int, float)) and base:
                    table[f"{workload}.{key}"] = round(value / base, 2)
    table["cold_start_s"] = round(ours["cold_start_s"] / seed["cold_start_s"], 2)
    return table


def versions() -> dict[str, str]:
    from importlib.metadata import version

    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    nginx = subprocess.run([find_binary("nginx"), "-v"], capture_output=True, text=True).stderr.strip()
    return {"machine": f"{os.cpu_count()} CPUs ({cpu})", "nginx": nginx,
            "gunicorn": version("gunicorn"), "gevent": version("gevent"), "python": os.sys.version.split()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10, help="each workload's duration")
    parser.add_argument("--rounds", type=int, default=3, help="trials of each workload per configuration")
    # 150/s: about 60 % of what either setup can serve here (~250-300 authenticated reads/s on
    # 2 cores), so latency, not saturation, is compared; a faster machine wants a higher rate
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
        print(f"bench: seed and ours, {options.rounds} rounds ...", flush=True)
        results = measure(postgres, env, slow_env, options)
    finally:
        if proxy:
            proxy.close()
        redis.stop()
        postgres.close()

    settings = {"seconds": options.seconds, "rounds": options.rounds, "rate": options.rate,
                "sweep": options.sweep, "delay": options.delay}
    document = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "options": settings,
                "versions": versions(), "results": results, "ratios": ratios(results["seed"], results["ours"])}
    output = options.output or RESULTS / f"{document['time'].replace(':', '')}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(document, indent=2) + "\n")
    from .report import table

    print(table(document))
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
