"""The counted load (harness/load.py): its bounds in rate, count and time, and a summary
that counts every outcome, failures included."""

import http.client
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from harness.load import LoadRun, Outcome, Recorder, run_load
from harness.process import free_port
from harness.wait import wait_for


class Handler(BaseHTTPRequestHandler):
    """GET /ok answers 200, anything else 503."""

    def do_GET(self):
        self.send_response(200 if self.path == "/ok" else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def http_port():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="http-server")
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(5)


def get(port: int, path: str):
    def operation(i: int, worker: int) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            connection.request("GET", path)
            with connection.getresponse() as response:
                response.read()
                return response.status
        finally:
            connection.close()

    return operation


def test_the_rate_bounds_the_requests_in_the_duration(http_port):
    load = LoadRun([("ok", get(http_port, "/ok"))], rate=50, duration=1, max_requests=1000, workers=4)
    recorder = load.start().join(30)

    # how many get sent depends on the scheduler (a due request is dropped once the deadline
    # passes); which slots they took does not: each its own start + i / rate, all before the end
    slots = sorted(round((o.started - load.started) * load.rate) for o in recorder.outcomes)
    assert [load.started + i / load.rate for i in slots] == sorted(o.started for o in recorder.outcomes)
    assert slots and len(set(slots)) == len(slots) and slots[-1] < 50
    assert all(o.sent >= o.started for o in recorder.outcomes)  # none sent before it was due
    summary = recorder.summary()
    assert summary["requests"] <= 50
    assert summary["ok"] == summary["requests"] and summary["failed"] == 0
    assert summary["by_status"] == {"200": summary["requests"]}


def test_max_requests_bounds_the_count_before_the_duration(http_port):
    started = time.monotonic()
    recorder = run_load([("ok", get(http_port, "/ok"))], rate=1000, duration=30, max_requests=20, workers=4)

    assert recorder.summary()["requests"] == 20
    assert time.monotonic() - started < 10


def test_summary_counts_statuses_errors_and_the_mix(http_port):
    closed = get(free_port(), "/ok")
    mix = [("read", get(http_port, "/ok")), ("read", get(http_port, "/ok")), ("busy", get(http_port, "/busy")),
           ("down", closed)]
    summary = run_load(mix, rate=200, duration=5, max_requests=8, workers=2).summary()

    assert summary["requests"] == 8
    assert summary["ok"] == 4 and summary["failed"] == 4
    assert summary["by_status"] == {"200": 4, "503": 2, "error": 2}
    assert summary["by_op"] == {"read": 4, "busy": 2, "down": 2}
    assert 0 < summary["p50"] <= summary["p99"] <= summary["longest"]


def test_an_exception_is_an_outcome_without_status(http_port):
    recorder = run_load([("down", get(free_port(), "/ok"))], rate=100, duration=5, max_requests=3, workers=1)

    for outcome in recorder.outcomes:
        assert outcome.status is None and not outcome.ok
        assert outcome.error.startswith("ConnectionRefusedError: ")


def test_each_worker_gets_its_index_and_requests_their_number():
    seen = []

    def operation(i: int, worker: int) -> int:
        seen.append((i, worker))
        return 204

    run_load([("noop", operation)], rate=500, duration=5, max_requests=30, workers=3)

    assert sorted(i for i, _ in seen) == list(range(30))
    assert {worker for _, worker in seen} <= {0, 1, 2}


def test_waiting_for_a_busy_worker_counts_in_the_latency():
    def operation(i: int, worker: int) -> int:
        if i == 0:
            time.sleep(0.3)  # one slow request holds the only worker
        return 200

    mix = [(f"r{n}", operation) for n in range(5)]
    recorder = run_load(mix, rate=100, duration=5, max_requests=5, workers=1)

    last = next(o for o in recorder.outcomes if o.op == "r4")
    first = next(o for o in recorder.outcomes if o.op == "r0")
    assert last.started - first.started == pytest.approx(0.04)  # when it was due, not when it ran
    assert last.duration >= 0.25


def test_stop_ends_the_load_early_and_join_waits_for_the_workers():
    load = LoadRun([("noop", lambda i, worker: 200)], rate=20, duration=30, max_requests=10_000, workers=2)
    with load:
        wait_for(lambda: len(load.recorder.outcomes) >= 3, 5, "three requests")

    assert len(load.recorder.outcomes) < 100
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("load-")]


def test_recorder_answers_when_failures_began_and_ended():
    recorder = Recorder()
    sequence = [(1.0, 200), (2.0, 200), (3.0, None), (3.5, 503), (4.0, 200), (5.0, 200)]
    for started, status in reversed(sequence):  # they may finish in any order
        recorder.add(Outcome("get", status, None if status else "TimeoutError", started, 6 - started))

    assert recorder.first_failure_after(0) == 3.0
    assert recorder.first_failure_after(3.2) == 3.5
    assert recorder.first_failure_after(3.6) is None
    assert recorder.first_success_after(3.0) == 4.0
    assert [o.started for o in recorder.failures_between(3.0, 3.5)] == [3.0]
    summary = recorder.summary()
    assert summary["longest"] == 5.0 and summary["p50"] == 2.5 and summary["p99"] == 5.0
    assert summary["by_status"] == {"200": 4, "error": 1, "503": 1}


def test_an_empty_summary_has_no_latencies():
    assert Recorder().summary() == {"requests": 0, "ok": 0, "failed": 0, "by_status": {}, "by_op": {},
                                    "longest": None, "longest_service": None, "p50": None, "p99": None}


def test_service_time_leaves_out_the_wait_for_a_worker():
    outcome = Outcome("get", 200, None, started=10.0, duration=3.0, sent=12.5)

    assert outcome.service_time == 0.5
