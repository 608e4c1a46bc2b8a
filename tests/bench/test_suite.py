"""The benchmark suite runs end to end on a tiny budget and reports every figure for both
configurations. Figures are never asserted: they are for `make bench` to measure."""

import json
import subprocess
import sys

import pytest

from bench.report import ROWS
from harness import REPO

pytestmark = pytest.mark.slow


def test_the_suite_measures_both_configurations_and_reports(tmp_path):
    results = tmp_path / "results.json"
    run = subprocess.run([sys.executable, "-m", "bench", "--seconds", "1", "--rounds", "2", "--rate", "40",
                          "--sweep", "20,40",
                          "--sweep-seconds", "1", "--output", str(results)],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr

    document = json.loads(results.read_text())
    for name in ("seed", "ours"):
        figures = document["results"][name]
        for _, workload, figure, _ in ROWS:
            assert isinstance(figures[workload][figure], (int, float)), (name, workload, figure)
        assert [point["offered"] for point in figures["read_sweep"]] == [20, 40]
        read = figures["read_c64"]  # two trials, alternated: a median between their extremes
        trials = read["rps_trials"]
        assert len(trials) == 2 and min(trials) <= read["rps"] <= max(trials)
        assert figures["cold_start_s"] > 0
    assert "read_c64.rps" in document["ratios"]
    assert "| authenticated read, c=64: requests/s |" in run.stdout

    report = subprocess.run([sys.executable, "-m", "bench.report", str(results), "--document",
                             str(tmp_path / "benchmarks.md"), "--plot", str(tmp_path / "latency.png")],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    assert "| cold start to the first 200 through nginx |" in (tmp_path / "benchmarks.md").read_text()
    assert (tmp_path / "latency.png").read_bytes().startswith(b"\x89PNG")
