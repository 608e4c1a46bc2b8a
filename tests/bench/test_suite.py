"""The benchmark suite runs end to end on a tiny budget (one round) and reports every figure for
both configurations; its rounds alternate and give medians. Figures are never asserted: they
are for `make bench` to measure."""

import json
import subprocess
import sys

import pytest

from bench.report import ROWS
from bench.suite import alternated
from harness import REPO

pytestmark = pytest.mark.slow


def test_the_suite_measures_both_configurations_and_reports(tmp_path):
    results = tmp_path / "results.json"
    run = subprocess.run([sys.executable, "-m", "bench", "--seconds", "1", "--rounds", "1", "--rate", "40",
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
        assert figures["read_c64"]["rps_trials"] == [figures["read_c64"]["rps"]]
        assert figures["cold_start_s"] > 0
    assert "read_c64.rps" in document["ratios"]
    assert "| authenticated read, c=64: requests/s |" in run.stdout

    report = subprocess.run([sys.executable, "-m", "bench.report", str(results), "--document",
                             str(tmp_path / "benchmarks.md"), "--plot", str(tmp_path / "latency.png")],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    assert "| cold start to the first 200 through nginx |" in (tmp_path / "benchmarks.md").read_text()
    assert (tmp_path / "latency.png").read_bytes().startswith(b"\x89PNG")


class FakeSite:
    """Records the order it is measured in; each trial's figures are its number."""

    def __init__(self, name: str, order: list[str]):
        self.name, self.order = name, order

    def measured(self, run) -> dict:
        self.order.append(self.name)
        return run()


def test_rounds_alternate_which_configuration_goes_first_and_give_medians():
    order: list[str] = []
    sites = {name: FakeSite(name, order) for name in ("seed", "ours")}
    trials = iter(range(100))
    results = alternated(sites, {"read": lambda site: {"rps": next(trials), "requests": 10}}, rounds=3)

    assert order == ["seed", "ours", "ours", "seed", "seed", "ours"]
    # seed got trials 0, 3, 4 and ours 1, 2, 5: the median of each, every requests/s kept, requests summed
    assert results["seed"]["read"] == {"rps": 3, "requests": 30, "rps_trials": [0, 3, 4]}
    assert results["ours"]["read"] == {"rps": 2, "requests": 30, "rps_trials": [1, 2, 5]}
