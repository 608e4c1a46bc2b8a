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
# (label, workload, figure, unit); the ratio column is ours / seed
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
    ("peak worker memory (read, c=64)", "read_c64", "worker_rss_mb", "MB"),
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
    seed, ours = document["results"]["seed"], document["results"]["ours"]
    lines = ["| workload | seed | ours | ours / seed |", "|---|---|---|---|"]

    def cell(figures, figure, unit):
        value = figures.get(figure)
        if value is None:
            return "-"
        text = f"{value:,}{' ' + unit if unit else ''}"
        trials = figures.get("rps_trials", [])
        if figure == "rps" and len(trials) > 1:  # the median; the trials' range after it
            text += f" ({min(trials):,}-{max(trials):,})"
        return text

    for label, workload, figure, unit in ROWS:
        if workload not in seed or workload not in ours:
            continue  # a result from before the workload existed
        a, b = seed[workload].get(figure), ours[workload].get(figure)
        ratio = f"{b / a:.2f}x" if a and b is not None else "-"
        seed_cell, our_cell = cell(seed[workload], figure, unit), cell(ours[workload], figure, unit)
        lines.append(f"| {label} | {seed_cell} | {our_cell} | {ratio} |")
    a, b = seed["cold_start_s"], ours["cold_start_s"]
    lines.append(f"| cold start to the first 200 through nginx | {a} s | {b} s | {b / a:.2f}x |")
    errors = {name: sum(figures.get("errors", 0) for figures in result.values() if isinstance(figures, dict))
              for name, result in document["results"].items()}
    lines.append(f"| errors (non-2xx, socket) in all workloads above | {errors['seed']} | {errors['ours']} | |")
    return "\n".join(lines)


def plot(document: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(7, 4), dpi=100)
    for name, style in (("seed", "--"), ("ours", "-")):
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
    destination.write_text(f"""# Benchmarks: the seed's Gunicorn setup against ours

Generated by `make bench-report` from `{source.name}` (`make bench`, {document['time']});
do not edit by hand.

The seed reference is the tutorial this kit grew from: sync workers, `2 x cores + 1` of them,
`preload_app`, `max_requests = 1000` (bench/seed_gunicorn.conf.py). Ours is gunicorn.conf.py with
its defaults, started as the Dockerfile starts it (gevent's launcher, so the app is preloaded).
Both serve the same app behind the same nginx (this repo's configuration, TLS,
per-address limits lifted for the load) on the same Postgres and Redis, on this machine, side by
side in one run: each workload ran on one and then the other, {rounds}, the order swapped
each round, so a slow minute of the machine lands on both. Each figure is the median of its
trials (requests/s gives the trials' range in brackets); errors are summed. Each trial
ran {options['seconds']:g} s: wrk at 64 connections; hey at a fixed {options['rate']} requests/s
offered, spread evenly (one hey per 10 requests/s, started in turn, since one hey's workers fire
together), every latency kept, so p99.9 is real; the read
again with {options['delay'] * 1000:g} ms added to every Postgres round trip by a proxy. App CPU is
read from /proc (master, workers, and the workers it reaped), so it is per request whatever the
worker model. The figures vary from run to run by 10-20 %: compare within one run.

{table(document)}

![p50 and p99 latency of the authenticated read against offered load, both configurations]({plot_path.name})

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
