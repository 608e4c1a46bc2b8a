"""The benchmark's table, and docs/benchmarks.md with its latency plot, from a results file.

Usage: .venv/bin/python -m bench.report [results.json] [--document PATH] [--plot PATH]
(default: the newest result in bench/results, docs/benchmarks.md and docs/benchmarks-latency.png)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from harness import REPO

RESULTS = REPO / "bench" / "results"
DOCUMENT = REPO / "docs" / "benchmarks.md"
PLOT = REPO / "docs" / "benchmarks-latency.png"
# The hand-written history of the changes and their measurements, appended to the document.
CHANGES = REPO / "bench" / "changes.md"
# The configurations with a column each, in order; a result from before the floor has none.
NAMES = ("seed", "ours", "floor")
MISSING = "—"
# (label, workload, figure, unit); the ratio columns are ours / seed and ours / floor
ROWS = [
    ("/health, c=64: requests/s", "health_c64", "rps", ""),
    ("/health, c=64: p99", "health_c64", "p99_ms", "ms"),
    ("/health: app CPU per request", "health_c64", "cpu_ms_per_request", "ms"),
    ("/health: worker restarts (recycling)", "health_c64", "worker_restarts", ""),
    ("authenticated read, c=64: requests/s", "read_c64", "rps", ""),
    ("authenticated read, c=64: p99", "read_c64", "p99_ms", "ms"),
    ("app CPU per authenticated read", "read_c64", "cpu_ms_per_request", "ms"),
    ("authenticated write, c=64: requests/s", "write_c64", "rps", ""),
    ("authenticated write, c=64: p99", "write_c64", "p99_ms", "ms"),
    ("read at a fixed rate: p50", "read_fixed_rate", "p50_ms", "ms"),
    ("read at a fixed rate: p99", "read_fixed_rate", "p99_ms", "ms"),
    ("read at a fixed rate: p99.9", "read_fixed_rate", "p999_ms", "ms"),
    ("read, Postgres round trips delayed, c=100: requests/s", "read_slow_db_c100", "rps", ""),
    ("peak worker memory, RSS (read, c=64)", "read_c64", "worker_rss_mb", "MB"),
    ("the largest worker's memory, PSS, after the read", "read_c64", "worker_pss_mb", "MB"),
    ("the master's memory, PSS, after the read", "read_c64", "master_pss_mb", "MB"),
    ("/health, workers recycled every 1000 requests: requests/s", "health_recycling_c64", "rps", ""),
    ("the same: p99", "health_recycling_c64", "p99_ms", "ms"),
    ("the same: worker restarts", "health_recycling_c64", "worker_restarts", ""),
]


def newest() -> Path:
    files = sorted(RESULTS.glob("*.json"))
    if not files:
        raise SystemExit(f"no results in {RESULTS}: run `make bench` first")
    return files[-1]


def table(document: dict) -> str:
    """The figures of each configuration, ours over the seed's and the floor's, and metrics'
    share of the read's CPU; "—" for a figure the result lacks."""
    results = [document["results"].get(name, {}) for name in NAMES]
    lines = ["| workload | seed | ours | floor | ours / seed | ours / floor |", "|---|---|---|---|---|---|"]

    def cell(figures, figure, unit):
        value = figures.get(figure)
        if value is None:
            return MISSING
        text = f"{value:,}{' ' + unit if unit else ''}"
        trials = figures.get("rps_trials", [])
        if figure == "rps" and len(trials) > 1:  # the median; the trials' range after it
            text += f" ({min(trials):,}-{max(trials):,})"
        return text

    def over(value, base):
        return f"{value / base:.2f}x" if value is not None and base else MISSING

    for label, workload, figure, unit in ROWS:
        columns = [result.get(workload, {}) for result in results]
        seed, ours, floor = (figures.get(figure) for figures in columns)
        if seed is None and ours is None:
            continue  # a result from before the workload or the figure existed
        cells = " | ".join(cell(figures, figure, unit) for figures in columns)
        lines.append(f"| {label} | {cells} | {over(ours, seed)} | {over(ours, floor)} |")
    seed, ours, floor = (result.get("cold_start_s") for result in results)
    cells = " | ".join(MISSING if value is None else f"{value} s" for value in (seed, ours, floor))
    lines.append(f"| cold start to the first 200 through nginx | {cells} | {over(ours, seed)} | {over(ours, floor)} |")
    errors = " | ".join(
        str(sum(figures.get("errors", 0) for figures in result.values() if isinstance(figures, dict)))
        if result else MISSING for result in results)
    lines.append(f"| errors (non-2xx, socket) in all workloads above | {errors} | | |")
    trips = document["results"].get("floor_trips", {}).get("read_c64")
    if trips:  # results from before it have no floor_trips
        ours, floor = (result.get("read_c64", {}).get("cpu_ms_per_request") for result in results[1:])
        cpu = trips["cpu_ms_per_request"]
        lines += ["", f"the read's round trips alone (floor_trips): {cpu} ms of app CPU per read, "
                  f"{over(cpu, floor)} the floor's, at {trips['rps']:,} requests/s, {trips.get('errors', 0)} errors; "
                  f"ours is {over(ours, cpu)} it"]
    if "metrics_cost_percent" in document:  # results from before it have no run with metrics off
        lines += ["", f"metrics' share of the read's app CPU: {document['metrics_cost_percent']} % (target ≤ 5 %; "
                  "ours with and without metrics reading at once, a fresh pair each round, the median of the rounds' "
                  "ratios)"]
    return "\n".join(lines)


def plot(document: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(7, 4), dpi=100)
    for name, style in (("seed", "--"), ("ours", "-"), ("floor", ":")):
        if name not in document["results"]:
            continue  # a result from before the floor
        sweep = document["results"][name]["read_sweep"]
        offered = [point["offered"] for point in sweep]
        for percentile, marker in (("p50_ms", "o"), ("p99_ms", "s")):
            axes.plot(offered, [point[percentile] for point in sweep], style, marker=marker,
                      label=f"{name} {percentile.split('_')[0]}")
    axes.set_xlabel("offered load, authenticated reads/s")
    axes.set_ylabel("latency, ms (log)")
    axes.set_yscale("log")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    axes.set_title("Latency against offered load, through nginx TLS")
    figure.tight_layout()
    figure.savefig(path)
    pyplot.close(figure)


def write(document: dict, source: Path, destination: Path = DOCUMENT, plot_path: Path = PLOT) -> None:
    plot(document, plot_path)
    options, machine = document["options"], document["versions"]
    trials = options.get("rounds", 1)  # results from before the rounds had one trial each
    rounds = "once" if trials == 1 else f"{trials} times"
    destination.write_text(f"""# Benchmarks: the seed's Gunicorn setup, ours, and the floor

Generated by `make bench-report` from `{source.name}` (`make bench`, {document['time']});
do not edit by hand.

The seed reference is the tutorial this kit grew from: sync workers, `2 x cores + 1` of them,
`preload_app`, `max_requests = 1000` (bench/seed_gunicorn.conf.py). Ours is gunicorn.conf.py with
its defaults, Prometheus metrics on, started as the Dockerfile starts it (gevent's launcher, so
the app is preloaded). Both serve the same app behind the same nginx (this repo's configuration,
TLS, per-address limits lifted for the load) on the same Postgres and Redis, on this machine,
side by side with the floor in one run: each workload ran on each in turn, {rounds}, the order
rotated each round, so a slow minute of the machine lands on all three. Each figure is the
median of its trials (requests/s gives the trials' range in brackets); errors are summed. Each
trial ran {options['seconds']:g} s: wrk at 64 connections; hey at a fixed {options['rate']} requests/s
offered, spread evenly (one hey per 10 requests/s, started in turn, since one hey's workers fire
together), every latency kept, so p99.9 is real; the read
again with {options['delay'] * 1000:g} ms added to every Postgres round trip by a proxy. App CPU is
read from /proc (master, workers, and the workers it reaped), so it is per request whatever the
worker model. The figures vary from run to run by 10-20 %: compare within one run.

The floor is bare Flask (bench/floor.py): the same routes, the read answered with a page of the
same shape and size built from memory, and no Postgres, Redis, session or middleware, under the
same gunicorn.conf.py, launcher, nginx and TLS as ours. It shows what Flask alone costs in this
setup, so ours / floor is the kit's own cost: the database, the session, the middleware, the
request metrics. The first line under the table is the least a read that makes ours' round
trips can cost: the floor plus a redis-py GET of ours' session record and a psycopg2 query of
ours' page, nothing else (bench/floor_trips.py, the authenticated read only, in the same
rotation). Ours over it is what the kit's layers cost; it over the floor, what the round trips
themselves cost, in the kernel as much as in the drivers. The last line compares the read's
app CPU on ours with ours run with `METRICS_PORT=0`, which turns metrics off (no metrics port, no
multiprocess files, no request counted): both read at the same time, in two more rounds than
the other workloads, each round on a pair started afresh and starting the other one first. The
figure is the median of the rounds' ratios, since a difference of a few percent hides in this
machine's drift between trials, and in the few percent by which one running site differs from
another of the same configuration.

{table(document)}

![p50 and p99 latency of the authenticated read against offered load, each configuration]({plot_path.name})

Machine: {machine['machine']}; {machine['nginx']}; Gunicorn {machine['gunicorn']}, gevent {machine['gevent']},
Python {machine['python']}.

{CHANGES.read_text()}""")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="?")
    parser.add_argument("--document", type=Path, default=DOCUMENT)
    parser.add_argument("--plot", type=Path, default=PLOT)
    options = parser.parse_args()
    source = options.results or newest()
    write(json.loads(source.read_text()), source, options.document, options.plot)
    print(f"wrote {options.document} and {options.plot}")


if __name__ == "__main__":
    main()
