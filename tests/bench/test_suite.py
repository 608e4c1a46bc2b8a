"""The benchmark suite runs end to end on a tiny budget (one round) and reports every figure for
the seed, ours and the floors; its rounds rotate and give medians; the report still renders a
result from before the floor. Figures are never asserted: they are for `make bench` to measure."""

import json
import subprocess
import sys
from concurrent.futures import Future

import pytest

from bench import suite
from bench.report import ROWS, table, write
from bench.suite import CONFIGS, alternated, together
from harness import REPO

pytestmark = pytest.mark.slow


def test_the_suite_measures_every_configuration_and_reports(tmp_path):
    results = tmp_path / "results.json"
    run = subprocess.run([sys.executable, "-m", "bench", "--seconds", "1", "--rounds", "1", "--rate", "40",
                          "--sweep", "20,40",
                          "--sweep-seconds", "1", "--output", str(results)],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr

    document = json.loads(results.read_text())
    for name in ("seed", "ours", "floor"):
        figures = document["results"][name]
        for _, workload, figure, _ in ROWS:
            assert isinstance(figures[workload][figure], (int, float)), (name, workload, figure)
        assert [point["offered"] for point in figures["read_sweep"]] == [20, 40]
        assert figures["read_c64"]["rps_trials"] == [figures["read_c64"]["rps"]]
        assert figures["cold_start_s"] > 0
        assert figures["read_c64"]["worker_pss_mb"] > 0 and figures["read_c64"]["master_pss_mb"] > 0
    beside = document["results"]["ours_nometrics"]
    assert list(beside) == ["read_beside_ours"]
    assert beside["read_beside_ours"]["cpu_ratio"] > 0 and beside["read_beside_ours"]["requests"] > 0
    assert "read_c64.rps" in document["ratios"]
    assert "read_c64.cpu_ms_per_request" in document["floor_ratios"]
    # the floor with the round trips reads only, as ours (the bench checks it reads ours' page)
    trips = document["results"]["floor_trips"]
    assert list(trips) == ["read_c64"] and trips["read_c64"]["cpu_ms_per_request"] > 0
    assert "read_c64.cpu_ms_per_request" in document["floor_trips_ratios"]
    assert all(key.startswith("read_c64.") for key in document["floor_trips_ratios"])
    assert isinstance(document["metrics_cost_percent"], (int, float))
    assert "| authenticated read, c=64: requests/s |" in run.stdout
    assert "metrics' share of the read's app CPU: " in run.stdout
    assert "the read's round trips alone (floor_trips): " in run.stdout

    report = subprocess.run([sys.executable, "-m", "bench.report", str(results), "--document",
                             str(tmp_path / "benchmarks.md"), "--plot", str(tmp_path / "latency.png")],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    assert "| cold start to the first 200 through nginx |" in (tmp_path / "benchmarks.md").read_text()
    assert (tmp_path / "latency.png").read_bytes().startswith(b"\x89PNG")


def test_a_result_from_before_the_floor_renders_with_dashes(tmp_path):
    figures = {"cold_start_s": 1.5, "read_c64": {"rps": 400.0, "p99_ms": 200.0, "errors": 0, "rps_trials": [400.0]},
               "read_sweep": [{"offered": 50, "p50_ms": 5.0, "p99_ms": 9.0}]}
    document = {"time": "2026-11-23T22:01:02+00:00", "results": {"seed": figures, "ours": figures},
                "options": {"seconds": 10, "rate": 150, "sweep": [50], "delay": 0.04}, "ratios": {},
                "versions": {"machine": "2 CPUs", "nginx": "nginx", "gunicorn": "27", "gevent": "26", "python": "3"}}

    rendered = table(document)
    assert "| authenticated read, c=64: requests/s | 400.0 | 400.0 | — | 1.00x | — |" in rendered
    assert "| cold start to the first 200 through nginx | 1.5 s | 1.5 s | — | 1.00x | — |" in rendered
    assert "PSS" not in rendered and "metrics' share" not in rendered
    write(document, tmp_path / "old.json", tmp_path / "benchmarks.md", tmp_path / "latency.png")
    assert rendered in (tmp_path / "benchmarks.md").read_text()


class FakeSite:
    """Records the order it is measured in; each trial's figures are its number."""

    def __init__(self, name: str, order: list[str]):
        self.name, self.order = name, order

    def measured(self, run) -> dict:
        self.order.append(self.name)
        return run()


def test_rounds_rotate_which_configuration_goes_first_and_give_medians():
    order: list[str] = []
    sites = {name: FakeSite(name, order) for name in ("seed", "ours", "floor")}
    trials = iter(range(100))
    results = alternated(sites, {"read": lambda site: {"rps": next(trials), "requests": 10}}, rounds=3)

    assert order == ["seed", "ours", "floor", "ours", "floor", "seed", "floor", "seed", "ours"]
    # seed got trials 0, 5, 7, ours 1, 3, 8 and the floor 2, 4, 6: the median of each, every
    # requests/s kept, requests summed
    assert results["seed"]["read"] == {"rps": 5, "requests": 30, "rps_trials": [0, 5, 7]}
    assert results["ours"]["read"] == {"rps": 3, "requests": 30, "rps_trials": [1, 3, 8]}
    assert results["floor"]["read"] == {"rps": 4, "requests": 30, "rps_trials": [2, 4, 6]}


class InlineExecutor:
    """Runs each task as it is submitted, so the order of the starts is the order of the calls."""

    def __init__(self, workers: int | None = None):
        pass

    def map(self, function, items):
        return [function(item) for item in items]

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False

    def submit(self, function, *args) -> Future:
        future = Future()
        future.set_result(function(*args))
        return future


def test_trials_taken_together_start_in_turn_and_come_back_in_the_sites_order(monkeypatch):
    monkeypatch.setattr(suite, "ThreadPoolExecutor", InlineExecutor)
    order: list[str] = []
    sites = [FakeSite(name, order) for name in ("ours", "ours_nometrics")]
    rounds = together(sites, lambda site: {"site": site.name}, rounds=3)

    assert order == ["ours", "ours_nometrics", "ours_nometrics", "ours", "ours", "ours_nometrics"]
    assert rounds == [[{"site": "ours"}, {"site": "ours_nometrics"}]] * 3


class FreshSite:
    """A site that records what happens to it, in one log shared by all; its trials cost what
    COSTS says."""

    COSTS = {"ours": 2.0, "ours_nometrics": 1.9}
    log: list[tuple[str, int, str]] = []

    def __init__(self, name: str, env: dict):
        self.name, self.number, self.url, self.auth = name, len({n for _, n, _ in self.log}), "https://x", {}
        self.log.append(("made", self.number, name))

    def start(self):
        self.log.append(("start", self.number, self.name))

    def sign_in(self):
        pass

    def measured(self, run) -> dict:
        self.log.append(("measured", self.number, self.name))
        return run()

    def close(self):
        self.log.append(("close", self.number, self.name))


def test_metrics_pairs_are_fresh_sites_each_round_started_and_measured_in_turn(monkeypatch):
    monkeypatch.setattr(suite, "ThreadPoolExecutor", InlineExecutor)
    monkeypatch.setattr(suite, "Site", FreshSite)
    monkeypatch.setattr(suite, "wrk", lambda *args, **kwargs: {})
    FreshSite.log = []
    run = lambda site: {"cpu_ms_per_request": FreshSite.COSTS[site.name], "requests": 10, "rps": 1}  # noqa: E731
    figures = suite.beside_ours("ours_nometrics", {}, run, rounds=3)

    # each round: two new sites, started, measured, closed before the next round makes its own
    expected = []
    for first, second in ((0, 1), (2, 3), (4, 5)):
        expected += [("made", first), ("start", first), ("made", second), ("start", second),
                     ("measured", first), ("measured", second), ("close", first), ("close", second)]
    assert [(event, number) for event, number, _ in FreshSite.log] == expected
    # started in turn, and measured in turn
    made = [name for event, _, name in FreshSite.log if event == "made"]
    assert made == ["ours", "ours_nometrics", "ours_nometrics", "ours", "ours", "ours_nometrics"]
    measured = [name for event, _, name in FreshSite.log if event == "measured"]
    assert measured == ["ours", "ours_nometrics", "ours_nometrics", "ours", "ours", "ours_nometrics"]
    assert figures["cpu_ratio"] == 0.95 and figures["ours_cpu_ms_per_request"] == 2.0
    assert figures["requests"] == 30


def test_ours_without_metrics_takes_no_turn_of_its_own_and_floor_trips_only_the_reads():
    order: list[str] = []
    sites = {name: FakeSite(name, order) for name in CONFIGS}
    trial = {"rps": 1, "requests": 1}
    results = alternated(sites, {"health_c64": lambda site: trial, "read_c64": lambda site: trial}, rounds=2)

    assert order == (["seed", "ours", "floor", "ours", "floor", "seed"]
                     + ["seed", "ours", "floor", "floor_trips", "ours", "floor", "floor_trips", "seed"])
    assert results["ours_nometrics"] == {}
    assert list(results["floor"]) == ["health_c64", "read_c64"]
    assert list(results["floor_trips"]) == ["read_c64"]
