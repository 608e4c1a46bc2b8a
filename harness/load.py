"""Open-loop load, bounded in count and in time, with every request counted.

The caller brings the operations, so the load knows nothing of the app's API:

    mix = [("read", read), ("read", read), ("write", write)]   # request i runs mix[i % 3]
    with LoadRun(mix, rate=50, duration=30, max_requests=2000, workers=8) as load:
        ...inject a fault, heal it...
    print(load.recorder.summary())

An operation is called as `operation(i, worker)`: `i` numbers the request, `worker` (0 ..
workers-1) lets it keep per-worker state, such as one cookie-keeping client per worker. It
returns the HTTP status; if it raises, the request counts as answered by no one (status None).

Requests are due at start + i / rate whether or not earlier ones have finished (open loop),
so a slow server does not slow the offered load. When every worker is busy, a due request
waits for one, and that wait counts in its latency: `started` is when it was due, not when a
worker got to it. Nothing starts after the deadline or after stop(): requests due but never
started are not sent and not recorded.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Operation = Callable[[int, int], int]


@dataclass(frozen=True)
class Outcome:
    op: str
    status: int | None  # None: no HTTP answer (connection error, timeout)
    error: str | None  # "ExceptionClass: message"
    started: float  # time.monotonic() when the request was due
    duration: float  # seconds from `started` to the answer or the error
    sent: float = 0.0  # time.monotonic() when a worker began it (later than `started` if all were busy)

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def service_time(self) -> float:
        """Seconds from sending to the answer: what the server took, without the wait for a worker."""
        return self.started + self.duration - max(self.sent, self.started)


class Recorder:
    """Collects outcomes from any thread; answers the questions drills and benchmarks ask."""

    def __init__(self):
        self._lock = threading.Lock()
        self._outcomes: list[Outcome] = []

    def add(self, outcome: Outcome) -> None:
        with self._lock:
            self._outcomes.append(outcome)

    @property
    def outcomes(self) -> list[Outcome]:
        """A copy, in the order they finished."""
        with self._lock:
            return list(self._outcomes)

    def failures_between(self, t0: float, t1: float) -> list[Outcome]:
        """Failed requests started in [t0, t1)."""
        return [o for o in self.outcomes if not o.ok and t0 <= o.started < t1]

    def first_failure_after(self, t: float) -> float | None:
        """When the first failed request started at or after t was started: the time to detect."""
        return min((o.started for o in self.outcomes if not o.ok and o.started >= t), default=None)

    def first_success_after(self, t: float) -> float | None:
        """When the first successful request started at or after t was started: the time to recover."""
        return min((o.started for o in self.outcomes if o.ok and o.started >= t), default=None)

    def summary(self) -> dict:
        """Counts and latencies (seconds) as a plain dict, for JSON and tables."""
        outcomes = self.outcomes
        durations = sorted(o.duration for o in outcomes)
        ok = sum(o.ok for o in outcomes)
        return {
            "requests": len(outcomes),
            "ok": ok,
            "failed": len(outcomes) - ok,
            "by_status": dict(Counter("error" if o.status is None else str(o.status) for o in outcomes)),
            "by_op": dict(Counter(o.op for o in outcomes)),
            "longest": durations[-1] if durations else None,
            "longest_service": max((o.service_time for o in outcomes), default=None),
            "p50": _percentile(durations, 50),
            "p99": _percentile(durations, 99),
        }


def _percentile(ordered: list[float], percent: float) -> float | None:
    """Nearest rank: the smallest value with at least `percent` % of the values at or below it."""
    if not ordered:
        return None
    return ordered[max(0, math.ceil(len(ordered) * percent / 100) - 1)]


class LoadRun:
    """Load in background threads: start(), then stop() early or let a bound end it, then join()."""

    def __init__(self, operations: Sequence[tuple[str, Operation]], *, rate: float, duration: float,
                 max_requests: int, workers: int, recorder: Recorder | None = None):
        if not operations or rate <= 0 or duration <= 0 or max_requests < 1 or workers < 1:
            raise ValueError("load needs operations, a positive rate, duration, max_requests and workers")
        self.operations = list(operations)
        self.rate, self.duration, self.max_requests, self.workers = rate, duration, max_requests, workers
        self.recorder = recorder or Recorder()
        self.started: float | None = None
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._next = 0
        self._threads: list[threading.Thread] = []

    def start(self) -> LoadRun:
        self.started = time.monotonic()
        self._threads = [threading.Thread(target=self._work, args=(worker,), name=f"load-{worker}", daemon=True)
                         for worker in range(self.workers)]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Start no more requests; those under way finish (join() waits for them)."""
        self._stopped.set()

    def join(self, timeout: float = 30) -> Recorder:
        """Wait for the requests under way; raise TimeoutError if one outlives `timeout`."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in self._threads):
            raise TimeoutError(f"load requests still running {timeout:g} s after the load ended")
        return self.recorder

    def __enter__(self) -> LoadRun:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
        self.join()

    def _work(self, worker: int) -> None:
        deadline = self.started + self.duration
        while True:
            with self._lock:
                i, self._next = self._next, self._next + 1
            due = self.started + i / self.rate
            if i >= self.max_requests or due >= deadline:
                return
            # waiting on the event, not sleeping, lets stop() end the wait at once
            if self._stopped.wait(due - time.monotonic()) or time.monotonic() >= deadline:
                return
            op, operation = self.operations[i % len(self.operations)]
            sent = time.monotonic()
            status = error = None
            try:
                status = operation(i, worker)
            except Exception as exc:  # any failure is an outcome to count, not a crash
                error = f"{type(exc).__name__}: {exc}"[:200] if str(exc) else type(exc).__name__
            self.recorder.add(Outcome(op, status, error, due, time.monotonic() - due, sent))


def run_load(operations: Sequence[tuple[str, Operation]], *, rate: float, duration: float, max_requests: int,
             workers: int, recorder: Recorder | None = None, join_timeout: float = 30) -> Recorder:
    """Run load in the foreground until a bound ends it; return the recorder."""
    run = LoadRun(operations, rate=rate, duration=duration, max_requests=max_requests, workers=workers,
                  recorder=recorder)
    return run.start().join(duration + join_timeout)
