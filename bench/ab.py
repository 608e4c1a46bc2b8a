"""A change measured side by side: the app at another commit (A) and the working tree (B),
both under the kit's Gunicorn configuration and nginx, on the same Postgres and Redis, one
workload alternated between them, the order swapped each round.

bench/changes.md records what each change measured this way; `make bench` measures the
configurations (seed, ours, floor), not changes.

Usage: .venv/bin/python -m bench.ab [--base HEAD] [--workload read] [--seconds 5] [--rounds 4]
                                    [--env-a NAME=VALUE ...] [--env-b NAME=VALUE ...]
--base is any git revision, checked out in a temporary worktree; `--base WORKTREE` compares
the working tree with itself, for a setting given by --env-a or --env-b alone.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
from contextlib import ExitStack
from pathlib import Path

from harness import REPO
from harness.servers import PostgresServer, RedisServer, migrate_to_head

from .suite import WRITE_SCRIPT, Site, app_settings, in_turn, paired_cpu_ratio, together, wrk

WORKLOADS = {
    "read": lambda site, seconds: wrk(f"{site.url}/api/notes", seconds, 64, site.auth),
    "health": lambda site, seconds: wrk(f"{site.url}/health", seconds, 64, {}),
    "write": lambda site, seconds: wrk(f"{site.url}/api/notes", seconds, 64, site.auth, WRITE_SCRIPT),
}


def checkout(stack: ExitStack, revision: str) -> Path:
    """The tree at `revision` in a temporary git worktree, removed at the end."""
    if revision == "WORKTREE":
        return REPO
    path = Path(tempfile.mkdtemp(prefix="bench-ab-")) / "tree"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--quiet", "--detach", str(path), revision], check=True)
    stack.callback(subprocess.run, ["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)], check=True)
    return path


def pairs(value: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="HEAD", help="the revision measured as A (WORKTREE: this tree)")
    parser.add_argument("--workload", choices=WORKLOADS, default="read")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--env-a", nargs="*", default=[], help="settings for A only")
    parser.add_argument("--env-b", nargs="*", default=[], help="settings for B only")
    parser.add_argument("--together", action="store_true",
                        help="load A and B at once (each with the workload's connections), so that both "
                             "meet the same machine: on a shared host, whose speed drifts from one "
                             "trial to the next, this compares CPU per request more closely")
    options = parser.parse_args()

    with ExitStack() as stack:
        trees = {"A": checkout(stack, options.base), "B": REPO}
        postgres = PostgresServer({"max_connections": "300"})
        stack.callback(postgres.close)
        redis = RedisServer(postgres.workdir / "redis")
        postgres.start()
        redis.start()
        stack.callback(redis.stop)
        url = postgres.create_database("bench")
        migrate_to_head(url)
        env = app_settings(url, redis.url)
        sites = {}
        for name, extra in (("A", pairs(options.env_a)), ("B", pairs(options.env_b))):
            site = Site("ours", {**env, **extra})
            site.gunicorn.cwd = trees[name]
            site.gunicorn.config = trees[name] / "gunicorn.conf.py"
            stack.callback(site.close)
            site.start()
            site.sign_in()
            sites[name] = site
        run = WORKLOADS[options.workload]
        for site in sites.values():  # warm: first connections, plans, caches
            run(site, 2)
        trials: dict[str, list[dict]] = {name: [] for name in sites}
        if options.together:
            for measured in together(list(sites.values()), lambda site: run(site, options.seconds), options.rounds):
                for name, trial in zip(sites, measured, strict=True):
                    trials[name].append(trial)
        else:
            for number in range(options.rounds):
                for name in in_turn(list(sites), number):
                    trials[name].append(sites[name].measured(lambda site=sites[name]: run(site, options.seconds)))
    print(f"{options.workload}, c=64, {options.rounds} rounds of {options.seconds:g} s, "
          f"A = {options.base}, B = the working tree")
    medians = {}
    for name, runs in trials.items():
        medians[name] = {key: statistics.median(run[key] for run in runs)
                         for key in ("rps", "p99_ms", "cpu_ms_per_request")}
        errors = sum(run["errors"] for run in runs)
        print(f"  {name}: {medians[name]['rps']:8.1f} req/s  p99 {medians[name]['p99_ms']:7.1f} ms  "
              f"app CPU {medians[name]['cpu_ms_per_request']:.3f} ms/request  errors {errors}  "
              f"(CPU per trial: {', '.join(str(run['cpu_ms_per_request']) for run in runs)})")
    print("  B / A: " + ", ".join(f"{key} {medians['B'][key] / medians['A'][key]:.2f}" for key in medians["A"]))
    if options.together:  # each pair met the same machine: the median of the pairs' ratios
        paired = paired_cpu_ratio(zip(trials["A"], trials["B"], strict=True))
        print(f"  B / A, app CPU per request, the median of the {options.rounds} pairs: {paired:.2f}")


if __name__ == "__main__":
    main()
