"""bench/readiness.py runs, and a readiness round costs one statement per worker per TTL."""

import re
import subprocess
import sys

import pytest

from harness import REPO

pytestmark = pytest.mark.slow


def test_bench_runs_and_readiness_costs_one_statement_per_worker_per_ttl():
    result = subprocess.run([sys.executable, "-m", "bench.readiness", "--seconds", "1.5", "--clients", "4",
                             "--workers", "1", "--ttl", "0.5"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr
    rounds, ceiling, statements = map(int, re.search(
        r"reaching Postgres: (\d+) \(at most one per worker per TTL: (\d+)\); (\d+) statements once connected",
        result.stdout).groups())
    assert 1 <= rounds <= ceiling
    assert statements == rounds, "a readiness round is one statement: no BEGIN, no ROLLBACK, no ping"
