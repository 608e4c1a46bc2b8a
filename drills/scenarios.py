"""The drills. Each injects one failure into a running NativeStack, measures what the users and
the load balancer saw, and lists every promise the stack broke (`violations`; none expected).

A drill's fault lasts `hold` seconds: a duration is what the drill is about (Postgres frozen for
10 s), so that one wait is on the clock. Everything else waits for observable state.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg2

from harness.https import SERVER_NAME, Client
from harness.load import LoadRun, Recorder
from harness.process import child_pids, find_binary
from harness.stack import NativeStack
from harness.traffic import PASSWORD, SOURCES, Users
from harness.wait import wait_for

RATE = 60  # requests per second through nginx, at least the 50 the drills promise
WORKERS = 48
# Added to a documented bound: nginx, TLS, and a busy 2-core machine (`make test` runs the drills
# after its other process has finished, but nothing stops a neighbour). 1 s was not enough with
# both test processes busy: a request bounded at 1 s took 2.1. A fault held longer than bound +
# SLACK still shows a missing bound.
SLACK = 2.0
# Tighter than the defaults, so that every fault outlasts the bounds it tests: a request may
# wait 1 s for a pooled connection plus 2 s on Postgres (3 s), or 1 s on Redis.
SETTINGS = {"DB_POOL_TIMEOUT": "1", "DB_REQUEST_TIMEOUT": "2", "REDIS_TIMEOUT": "1"}
# What a failure may look like: the app's or nginx's JSON 503 with Retry-After. Never a 500,
# a 502/504, a dropped connection or a timeout.
ALLOWED_FAILURES = {"503"}


@dataclass
class DrillResult:
    name: str
    fault: str
    summary: dict = field(default_factory=dict)
    detect: float | None = None  # fault -> the first 503 from /health/ready (what a balancer sees)
    recover: float | None = None  # heal -> /health/ready 200 and data requests 2xx again
    notes: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    failures: list = field(default_factory=list, repr=False)  # the failed requests' outcomes

    def row(self) -> dict:
        s = self.summary
        return {"drill": self.name, "fault": self.fault, "requests": s.get("requests", 0),
                "failed": s.get("failed", 0), "by_status": s.get("by_status", {}),
                "longest_s": round(s["longest_service"], 2) if s.get("longest_service") is not None else None,
                "detect_s": None if self.detect is None else round(self.detect, 2),
                "recover_s": None if self.recover is None else round(self.recover, 2),
                "notes": self.notes, "violations": self.violations}


def hold(seconds: float) -> None:
    """Keep a fault in place for its documented duration."""
    threading.Event().wait(seconds)


def request_bound(stack: NativeStack) -> float:
    """The longest a request may take when Postgres stops answering (README: "Bounded waits")."""
    env = stack.environment()
    return float(env.get("DB_POOL_TIMEOUT", 5)) + float(env.get("DB_REQUEST_TIMEOUT", 10))


def under_load(stack: NativeStack, users: Users, name: str, fault_name: str, inject: Callable[[], None],
               heal: Callable[[], None], *, hold_for: float, bound: float, writes: bool = True) -> DrillResult:
    """The common shape: load, a healthy baseline, the fault for `hold_for` s, the heal, recovery,
    then the checks every drill shares."""
    result = DrillResult(name, fault_name)
    users.forget_writes()
    worker_pids = sorted(stack.gunicorn.worker_pids())
    load = LoadRun(users.operations(writes), rate=RATE, duration=hold_for + 90, max_requests=100_000,
                   workers=WORKERS)
    try:
        load.start()
        recorder = load.recorder
        wait_for(lambda: _successes(recorder, "read") >= 20, 30, "a healthy baseline")
        faulted = time.monotonic()
        inject()
        hold(hold_for)
        healed = time.monotonic()
        heal()
        recovered = wait_for(lambda: _recovered(recorder, healed), 60, "recovery after the fault")
        hold(1.0)  # a second of healthy traffic after recovery, in the record
    finally:
        load.stop()
        recorder = load.join(60)
    users.retry_failed_writes()
    result.summary = recorder.summary()
    result.failures = [o for o in recorder.outcomes if not o.ok]
    first_503 = next((o.started + o.duration for o in sorted(recorder.outcomes, key=lambda o: o.started)
                      if o.op == "ready" and o.started >= faulted and o.status == 503), None)
    result.detect = None if first_503 is None else first_503 - faulted
    result.recover = recovered - healed
    result.violations += _shared_checks(stack, recorder, users, bound)
    if sorted(stack.gunicorn.worker_pids()) != worker_pids and name != "worker-killed":
        result.violations.append("Gunicorn's workers were replaced: the app restarted")
    return result


def _successes(recorder: Recorder, op: str) -> int:
    return sum(o.ok for o in recorder.outcomes if o.op == op)


def _recovered(recorder: Recorder, healed: float) -> float | None:
    """When readiness and data requests both succeeded again after the heal (time they answered)."""
    outcomes = recorder.outcomes
    ready = [o.started + o.duration for o in outcomes if o.op == "ready" and o.ok and o.started >= healed]
    data = [o.started + o.duration for o in outcomes if o.op == "read" and o.ok and o.started >= healed]
    return max(min(ready), min(data)) if ready and data else None


def _shared_checks(stack: NativeStack, recorder: Recorder, users: Users, bound: float) -> list[str]:
    problems = []
    outcomes = recorder.outcomes
    statuses = Counter("error" if o.status is None else str(o.status) for o in outcomes if not o.ok)
    unexpected = {status: count for status, count in statuses.items() if status not in ALLOWED_FAILURES}
    if unexpected:
        errors = sorted({o.error for o in outcomes if o.error})[:3]
        problems.append(f"failures other than 503: {unexpected} {errors}")
    slow = [o for o in outcomes if o.service_time > bound + SLACK]
    if slow:
        problems.append(f"{len(slow)} requests outlived the {bound:g} s bound (longest "
                        f"{max(o.service_time for o in slow):.1f} s)")
    if any(not o.ok for o in outcomes if o.op == "health"):
        problems.append("/health (liveness, no I/O) failed during the drill")
    problems += users.verify_writes()
    timeouts = [line for line in stack.gunicorn.log_lines() if "WORKER TIMEOUT" in line]
    if timeouts:
        problems.append(f"Gunicorn logged WORKER TIMEOUT {len(timeouts)} times")
    return problems


# --- 1-3: Postgres -----------------------------------------------------------------------------


def postgres_stopped(stack: NativeStack, users: Users, hold_for: float = 10) -> DrillResult:
    """Postgres shut down (connections refused), then started again."""
    return under_load(stack, users, "postgres-stopped", f"Postgres stopped for {hold_for:g} s", stack.postgres.stop,
                      stack.postgres.start, hold_for=hold_for, bound=request_bound(stack))


def postgres_frozen(stack: NativeStack, users: Users, hold_for: float = 10) -> DrillResult:
    """SIGSTOP on Postgres and its backends: connections are accepted and acknowledged by the
    kernel, and nothing answers. Every request must still end within its bound."""
    return under_load(stack, users, "postgres-frozen", f"Postgres frozen (SIGSTOP) for {hold_for:g} s",
                      stack.postgres.freeze, stack.postgres.thaw, hold_for=hold_for, bound=request_bound(stack))


def postgres_black_holed(stack: NativeStack, users: Users, hold_for: float = 10) -> DrillResult:
    """The network between the app and Postgres stops moving bytes (the fault proxy's stall):
    a partition rather than a paused server."""
    return under_load(stack, users, "postgres-black-holed", f"network to Postgres stalled for {hold_for:g} s",
                      stack.proxy.stall, stack.proxy.pass_through, hold_for=hold_for, bound=request_bound(stack))


def postgres_restarted(stack: NativeStack, users: Users) -> DrillResult:
    """A fast restart under load: only the requests in flight while it was down may fail."""
    marks = {}

    def restart():
        stack.postgres.restart()
        marks["up"] = time.monotonic()

    result = under_load(stack, users, "postgres-restarted", "Postgres restarted", restart, lambda: None, hold_for=0,
                        bound=request_bound(stack))
    # readiness may repeat its cached 503 for HEALTH_CACHE_TTL after the restart; data may not fail
    late = [o for o in result.failures if o.started > marks["up"] and o.op in ("read", "write")]
    if late:
        result.violations.append(f"{len(late)} reads or writes sent after the restart failed: "
                                 f"{Counter(o.op for o in late)}")
    return result


# --- 4: Redis ----------------------------------------------------------------------------------


def redis_stopped_then_frozen(stack: NativeStack, users: Users, hold_for: float = 5) -> DrillResult:
    """Redis stopped (refused), started, then frozen (SIGSTOP) and thawed. Session routes answer
    503 within REDIS_TIMEOUT; /health never notices."""
    redis_timeout = float(stack.environment().get("REDIS_TIMEOUT", 1))

    def inject():
        stack.redis.stop()
        hold(hold_for)
        stack.redis.start()
        wait_for(lambda: stack.redis.proc.poll() is None, 10, "redis running")
        stack.redis.freeze()

    result = under_load(stack, users, "redis-stopped-then-frozen", f"Redis stopped {hold_for:g} s, then frozen "
                        f"{hold_for:g} s", inject, stack.redis.thaw, hold_for=hold_for, bound=redis_timeout,
                        writes=True)
    return result


# --- 5: a worker killed ------------------------------------------------------------------------


def worker_killed(stack: NativeStack, users: Users) -> DrillResult:
    """SIGKILL one Gunicorn worker under load, while requests wait in it (parked behind a table
    lock, so that there are some to lose). The master starts a new worker; the loss is reported."""
    victim = {}

    def kill():
        victim["pid"] = stack.gunicorn.worker_pids()[0]
        with table_locked(stack, "notes"):
            wait_for(lambda: int(stack.sql("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                           "AND query LIKE '%notes%'")) >= 4, 10, "requests parked on the lock")
            os.kill(victim["pid"], signal.SIGKILL)
        wait_for(lambda: len(stack.gunicorn.worker_pids()) == stack.workers
                 and victim["pid"] not in stack.gunicorn.worker_pids(), 30, "a replacement worker")

    result = under_load(stack, users, "worker-killed", "one Gunicorn worker SIGKILLed", kill, lambda: None, hold_for=0,
                        bound=request_bound(stack))
    # nginx has one upstream here, so nothing is retried elsewhere: each request on the dead
    # worker is a 503 (nginx's 502, mapped). Releases with two replicas are the zero-loss case.
    result.notes.append(f"requests lost with the worker: {result.summary.get('failed', 0)}")
    return result


@contextmanager
def table_locked(stack: NativeStack, table: str):
    """Hold an exclusive lock on a table from outside the app: queries on it wait in flight."""
    locker = psycopg2.connect(stack.postgres.database_url("kit"))
    try:
        locker.cursor().execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        yield
    finally:
        locker.close()


# --- 6: logout racing a request in flight ------------------------------------------------------


def logout_race(stack: NativeStack, users: Users) -> DrillResult:
    """A request parked behind a table lock while the same session logs out; when it finishes,
    the session must stay dead."""
    result = DrillResult("logout-race", "logout while a request with the same cookie is in flight")
    client = stack.client(source=SOURCES[0])
    credentials = {"email": f"race-{uuid.uuid4().hex[:8]}@example.com", "password": PASSWORD}
    client.request("POST", "/api/auth/register", credentials)
    client.request("POST", "/api/auth/login", credentials)
    cookie = dict(client.cookies)
    parked: dict = {}
    with table_locked(stack, "notes"):
        in_flight = stack.client(source=SOURCES[1], cookies=dict(cookie), timeout=30)
        thread = threading.Thread(target=lambda: parked.update(r=in_flight.request("GET", "/api/notes")))
        thread.start()
        wait_for(lambda: stack.sql("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                   "AND query LIKE '%notes%'") != "0", 10, "the request parked on the lock")
        logout = client.request("POST", "/api/auth/logout").status
        after_logout = stack.client(source=SOURCES[2], cookies=dict(cookie)).request("GET", "/api/auth/me").status
    thread.join(30)
    after_finish = stack.client(source=SOURCES[2], cookies=dict(cookie)).request("GET", "/api/auth/me").status
    result.summary = {"requests": 4, "failed": 0, "by_status": {}}
    result.notes.append(f"logout {logout}; /me after logout {after_logout}; parked request "
                        f"{parked['r'].status if 'r' in parked else 'no answer'}; /me after it finished "
                        f"{after_finish}")
    if (logout, after_logout, after_finish) != (204, 401, 401):
        result.violations.append("the logged-out session came back to life")
    return result


# --- 7: a login flood --------------------------------------------------------------------------


# /health's p99 during the flood: ample for a loaded 2-core machine, far under what hashing on
# the event loop causes.
HEALTH_P99_BOUND = 0.5


def login_flood(stack: NativeStack, users: Users, seconds: float = 10) -> DrillResult:
    """Attackers on three addresses guess passwords (one account, then many) just under nginx's
    rate limit, while a load balancer polls /health. They must get 429s, /health must stay fast."""
    result = DrillResult("login-flood", f"password guessing from 3 addresses for {seconds:g} s")
    victim = {"email": f"victim-{uuid.uuid4().hex[:8]}@example.com", "password": PASSWORD}
    stack.client(source=SOURCES[0]).request("POST", "/api/auth/register", victim)
    # three addresses, three connections each
    attackers = [stack.client(source=f"127.0.1.{2 + n % 3}", keep_alive=True) for n in range(9)]
    poller = stack.client(source=SOURCES[1], keep_alive=True)

    def guess(i: int, worker: int) -> int:
        # the first half of the guesses at the victim, the rest at made-up accounts (each a hash)
        email = victim["email"] if i % 2 == 0 else f"guess-{i}@example.com"
        return attackers[worker].request("POST", "/api/auth/login", {"email": email, "password": f"guess {i}"}).status

    def poll(i: int, worker: int) -> int:
        return poller.request("GET", "/health").status

    # 9 guesses/s per address: under nginx's 10 r/s, so the app's own limits are what answer
    flood = LoadRun([("login", guess)], rate=27, duration=seconds, max_requests=10_000, workers=len(attackers))
    health = LoadRun([("health", poll)], rate=20, duration=seconds, max_requests=10_000, workers=1)
    flood.start()
    health.start()
    guesses = flood.join(seconds + 60)
    polls = health.join(seconds + 60)
    for client in (*attackers, poller):
        client.close()
    summary = guesses.summary()
    health_summary = polls.summary()
    result.summary = summary
    right_password = stack.client(source=SOURCES[2]).request("POST", "/api/auth/login", victim).status
    result.notes.append(f"guesses answered {summary['by_status']}; /health p50 "
                        f"{health_summary['p50'] * 1000:.1f} ms, p99 {health_summary['p99'] * 1000:.1f} ms over "
                        f"{health_summary['requests']} polls; the victim's right password then: {right_password}")
    if summary["by_status"].get("429", 0) == 0:
        result.violations.append("the attackers never got a 429")
    if set(summary["by_status"]) - {"401", "429"}:
        result.violations.append(f"guesses got other answers: {summary['by_status']}")
    # A bound, not a timing: off the event loop /health stays at a few ms (p99 6-15 ms here, 88 ms
    # once on a machine busy with another suite); with the hashes on the loop its p99 was 2.9-3.4 s.
    if health_summary["failed"] or health_summary["p99"] > HEALTH_P99_BOUND:
        result.violations.append(f"/health p99 {health_summary['p99'] * 1000:.1f} ms "
                                 f"(over {HEALTH_P99_BOUND * 1000:g} ms) or failures")
    return result


# --- 8: concurrent writes, and one rejected mid-way ---------------------------------------------


def concurrent_writes(stack: NativeStack, users: Users, count: int = 200) -> DrillResult:
    """`count` writes at once, each from a connection of its own, leave exactly `count` rows; a
    write whose connection is killed mid-transaction leaves nothing, and its retry (same key)
    leaves exactly one."""
    result = DrillResult("concurrent-writes", f"{count} concurrent writes; one killed mid-transaction")
    keys = [str(uuid.uuid4()) for _ in range(count)]
    start = threading.Barrier(count)
    answers: dict[str, int | None] = {}

    first_answers: dict[str, int | None] = {}

    def write(n: int) -> None:
        """One write, retried with its key while it fails (the pool may be saturated: 503)."""
        owner = users.clients[n % len(users.clients)]
        client = stack.client(source=SOURCES[n % len(SOURCES)], cookies=dict(owner.cookies), timeout=30)
        start.wait(30)
        deadline = time.monotonic() + 60
        while keys[n] not in answers and time.monotonic() < deadline:
            try:
                status = client.request("POST", "/api/notes", {"title": f"burst {keys[n]}"},
                                        headers={"Idempotency-Key": keys[n]}).status
            except OSError:
                status = None
            first_answers.setdefault(keys[n], status)
            if status == 201:
                answers[keys[n]] = status

    threads = [threading.Thread(target=write, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    # a write's worst case: the barrier (30 s), 60 s of retries, then a last request that may
    # be sent twice (30 s timeout each); rows counted while one still writes would mean nothing
    deadline = time.monotonic() + 30 + 60 + 2 * 30
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    if running := sum(thread.is_alive() for thread in threads):
        raise TimeoutError(f"{running} of {count} concurrent writes still running past their worst case")
    stored = stack.sql("SELECT count(*), count(DISTINCT title) FROM notes WHERE title LIKE 'burst %'")
    first = Counter(str(status) for status in first_answers.values())
    result.notes.append(f"{count} writes first answered {dict(first)}, all 201 after retries with their keys: "
                        f"{len(answers) == count}; rows (distinct titles): {stored.replace('|', ' (') + ')'}")
    if stored != f"{count}|{count}" or len(answers) != count:
        result.violations.append(f"{count} concurrent writes ({len(answers)} acknowledged) left {stored} rows "
                                 "(all|distinct)")
    result.violations += _killed_mid_transaction(stack, users.clients[0], result)
    result.summary = {"requests": count + 2, "failed": sum(status != 201 for status in first_answers.values()),
                      "by_status": dict(first)}
    return result


def _killed_mid_transaction(stack: NativeStack, client: Client, result: DrillResult) -> list[str]:
    key = str(uuid.uuid4())
    title = f"killed {key}"
    answer: dict = {}
    with table_locked(stack, "notes"):
        thread = threading.Thread(target=lambda: answer.update(status=client.request(
            "POST", "/api/notes", {"title": title}, headers={"Idempotency-Key": key}).status))
        thread.start()
        # this write's own INSERT (its title is in the query text), not a leftover from the burst
        waiting = wait_for(lambda: stack.sql("SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                             f"AND query LIKE 'INSERT INTO notes%' AND strpos(query, '{title}') > 0"),
                           10, "the insert on the lock")
        stack.sql(f"SELECT pg_terminate_backend({int(waiting)})")
        thread.join(30)
        if thread.is_alive():
            raise TimeoutError("the killed write still running 30 s after its backend was terminated")
    left = stack.sql(f"SELECT count(*) FROM notes WHERE title = '{title}'")
    retry = client.request("POST", "/api/notes", {"title": title}, headers={"Idempotency-Key": key}).status
    after_retry = stack.sql(f"SELECT count(*) FROM notes WHERE title = '{title}'")
    result.notes.append(f"write killed mid-transaction answered {answer.get('status')}, left {left} rows; "
                        f"its retry answered {retry}, leaving {after_retry}")
    problems = []
    if answer.get("status") != 503 or left != "0":
        problems.append(f"the killed write answered {answer.get('status')} and left {left} rows")
    if retry != 201 or after_retry != "1":
        problems.append(f"its retry answered {retry} and left {after_retry} rows")
    return problems


# --- 10: nginx reloaded ------------------------------------------------------------------------


def nginx_reloaded(stack: NativeStack, users: Users, reloads: int = 10) -> DrillResult:
    """`nginx -s reload`, what a certificate renewal does (releases never reload), `reloads` times
    under two loads at once: the users' (HTTP/1.1 keep-alive, strict clients that never send a
    request twice) and hey's over HTTP/2 (Go's client). A reload closes the old workers' idle
    HTTP/1.1 connections, and a request sent on one at that instant gets no answer: counted and
    reported, as docs/operations.md says, not a broken promise. An HTTP/2 connection gets a
    GOAWAY naming the last stream the old worker took; the client sends any later one on a new
    connection, as the protocol allows for any method. The promise: no HTTP/2 request fails."""
    result = DrillResult("nginx-reloaded", f"nginx reloaded {reloads} times")
    users.forget_writes()
    nginx = stack.nginx
    load = LoadRun(users.operations(True), rate=RATE, duration=reloads * 10 + 60, max_requests=100_000,
                   workers=WORKERS)
    bound = reloads * 60 + 60  # the waits below, at most; hey is interrupted when they are done
    http2 = subprocess.Popen([find_binary("hey"), "-h2", "-z", f"{bound}s", "-c", "4", "-q", "10", "-t", "10",
                              "-host", SERVER_NAME, f"https://127.0.0.1:{nginx.https_port}/health"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        load.start()
        recorder = load.recorder
        wait_for(lambda: _successes(recorder, "read") >= 20, 30, "a healthy baseline")
        for _ in range(reloads):
            old = set(child_pids(nginx.proc.pid))
            nginx.reload()
            wait_for(lambda old=old: set(child_pids(nginx.proc.pid)).isdisjoint(old), 30, "the old workers gone")
            served = _successes(recorder, "read")
            wait_for(lambda served=served: _successes(recorder, "read") >= served + 10, 30, "reads on the new workers")
    finally:
        load.stop()
        recorder = load.join(60)
        http2.send_signal(signal.SIGINT)  # hey stops and prints its summary
        try:
            hey_output = http2.communicate(timeout=60)[0]
        except subprocess.TimeoutExpired:  # never left running
            http2.kill()
            hey_output = http2.communicate()[0]
    users.retry_failed_writes()
    result.summary = recorder.summary()
    result.failures = [o for o in recorder.outcomes if not o.ok]
    failed = Counter(o.op for o in result.failures)
    result.notes.append(f"HTTP/1.1 keep-alive, strict: {result.summary['failed']} of "
                        f"{result.summary['requests']} failed ({dict(failed) or 'none'})")
    answered = sum(int(count) for count in re.findall(r"\[\d{3}\]\s+(\d+) responses", hey_output))
    errors = sum(int(count) for count in re.findall(r"\[(\d+)\]\t", hey_output.split("Error distribution:")[-1])
                 ) if "Error distribution:" in hey_output else 0
    result.notes.append(f"HTTP/2 (hey -h2): {errors} of {answered + errors} failed")
    if errors or not answered:
        result.violations.append(f"HTTP/2 requests failed across reloads: {errors} of {answered + errors}")
    result.violations += users.verify_writes()
    return result


ALL = (postgres_stopped, postgres_frozen, postgres_black_holed, postgres_restarted, redis_stopped_then_frozen,
       worker_killed, logout_race, login_flood, concurrent_writes, nginx_reloaded)
