"""Run every drill against a fresh native stack, print the table, write docs/resilience.md.

Usage: .venv/bin/python -m drills [--only NAME ...] [--no-report]
Exits 1 if any drill broke a promise (its violations are printed).
"""

from __future__ import annotations

import argparse
import sys

from harness.stack import NativeStack
from harness.traffic import Users

from . import report, scenarios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="drill function names, e.g. postgres_frozen")
    parser.add_argument("--no-report", action="store_true", help="do not rewrite docs/resilience.md")
    options = parser.parse_args()
    drills = [d for d in scenarios.ALL if not options.only or d.__name__ in options.only]

    results = []
    with NativeStack(scenarios.SETTINGS, fault_proxy=True) as stack:
        users = Users(stack, scenarios.WORKERS)
        for drill in drills:
            print(f"drill: {drill.__name__} ...", flush=True)
            results.append(drill(stack, users))
            print(report.line(results[-1]), flush=True)
        versions = report.versions(stack)
    print(report.table(results))
    if not options.no_report and not options.only:
        report.write(results, versions)
        print(f"wrote {report.DOCUMENT}")
    broken = [(r.name, v) for r in results for v in r.violations]
    for name, violation in broken:
        print(f"BROKEN {name}: {violation}", file=sys.stderr)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
