"""The app's own traffic, for drills and release tests: users who read and write their notes
through nginx, each from a loopback address of its own, every write carrying an Idempotency-Key
and retried with the same key until it succeeds.

Every write is kept in a ledger, so that after the drill the database can be checked against
what the clients were told: no acknowledged write lost, no write that a client saw fail left
behind without a successful retry, no duplicate.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from .https import Client
from .load import LoadRun, Recorder
from .wait import wait_for

Result = TypeVar("Result")

# Distinct peers for nginx: its limits are per address (10 r/s of /api/ each, 64 requests in
# progress), and real traffic comes from many addresses. Linux routes all of 127/8 to lo.
SOURCES = tuple(f"127.0.0.{n}" for n in range(10, 26))
PASSWORD = "correct horse battery staple"
# Longer than any bound the app documents, so a hang shows as a long request, not a client error.
CLIENT_TIMEOUT = 30.0
SIGN_UP_SECONDS = 120.0


class Site(Protocol):
    """What users need of a running stack (harness.stack.NativeStack, harness.compose.Stack)."""

    def client(self, **options) -> Client: ...

    def sql(self, statement: str) -> str: ...


@dataclass
class Write:
    title: str
    answers: list[int | None] = field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        return any(answer is not None and 200 <= answer < 300 for answer in self.answers)


class Users:
    """One signed-in user per load worker, with its own keep-alive connection and address."""

    def __init__(self, stack: Site, count: int):
        self.stack = stack
        self.writes: dict[str, Write] = {}
        self.retries: list[list[str]] = [[] for _ in range(count)]
        # what answered each failed read or poll (its body: the app's health report or nginx's
        # error), so a failure in a release test says who refused it and why
        self.refusals: list[str] = []
        self._lock = threading.Lock()
        self.clients: list[Client] = []
        # signed up in parallel: each sign-up costs two password hashes
        with ThreadPoolExecutor(8) as pool:
            signed_up = [pool.submit(self._sign_up, worker) for worker in range(count)]
        for future in signed_up:
            if future.exception() is None:
                self.clients.append(future.result())
        if len(self.clients) < count:
            self.close()
            raise next(future.exception() for future in signed_up if future.exception())

    def _sign_up(self, worker: int) -> Client:
        """Register and log in. Setup, not measurement: like any client of the API, it honours a
        503's Retry-After (the app's answer when password hashing is saturated, as on a loaded
        machine: one hash per worker at a time, a slot within 5 s), for at most SIGN_UP_SECONDS."""
        client = self.stack.client(source=SOURCES[worker % len(SOURCES)], keep_alive=True, timeout=CLIENT_TIMEOUT)
        credentials = {"email": f"user-{worker}-{uuid.uuid4().hex[:8]}@example.com", "password": PASSWORD}
        deadline = time.monotonic() + SIGN_UP_SECONDS
        try:
            for path, expected in (("/api/auth/register", 201), ("/api/auth/login", 200)):
                while (response := client.request("POST", path, credentials)).status == 503 \
                        and time.monotonic() < deadline:
                    time.sleep(int(response.headers.get("Retry-After", "1")))
                if response.status != expected:
                    raise RuntimeError(f"signing up user {worker}: {path} answered {response.status}")
        except BaseException:
            client.close()
            raise
        return client

    def forget_writes(self) -> None:
        """Start a new ledger (the next drill's)."""
        self.writes.clear()
        self.refusals.clear()
        for pending in self.retries:
            pending.clear()

    def operations(self, with_writes: bool = True) -> list:
        """The mix: half reads, a quarter writes, readiness and liveness polls."""
        mix = [("read", self.read), ("write", self.write), ("read", self.read), ("ready", self.ready),
               ("read", self.read), ("write", self.write), ("read", self.read), ("health", self.health)]
        return [(name, op) for name, op in mix if with_writes or name != "write"]

    def read(self, i: int, worker: int) -> int:
        return self._get(worker, "/api/notes?per_page=5")

    def ready(self, i: int, worker: int) -> int:
        return self._get(worker, "/health/ready")

    def health(self, i: int, worker: int) -> int:
        return self._get(worker, "/health")

    def _get(self, worker: int, path: str) -> int:
        response = self.clients[worker].request("GET", path)
        if response.status >= 300:
            self.refusals.append(f"{time.strftime('%H:%M:%S')} GET {path} {response.status} "
                                 f"{response.body[:400].decode(errors='replace')}")
        return response.status

    def write(self, i: int, worker: int) -> int:
        """A new note, or first the oldest write of this user that failed, with its key."""
        pending = self.retries[worker]
        key = pending.pop(0) if pending else str(uuid.uuid4())
        with self._lock:
            record = self.writes.setdefault(key, Write(f"drill {key}"))
        status = None
        try:
            status = self.clients[worker].request("POST", "/api/notes", {"title": record.title},
                                                  headers={"Idempotency-Key": key}).status
            return status
        finally:
            record.answers.append(status)
            if not record.succeeded:
                pending.append(key)

    def retry_failed_writes(self, within: float = 60) -> None:
        """What a client does once the service is back: send each failed write again, same key."""

        def all_done() -> bool:
            for worker, pending in enumerate(self.retries):
                for _ in range(len(pending)):
                    try:
                        self.write(0, worker)
                    except OSError:
                        pass
            return not any(self.retries)

        wait_for(all_done, within, "every failed write retried to success", interval=0.5)

    def verify_writes(self) -> list[str]:
        """Broken promises, comparing the database with what each client was told."""
        rows = Counter()
        for line in self.stack.sql("SELECT title, count(*) FROM notes WHERE title LIKE 'drill %' "
                                   "GROUP BY title").splitlines():
            title, count = line.rsplit("|", 1)
            rows[title] = int(count)
        problems = []
        for key, record in self.writes.items():
            stored = rows[record.title]
            if stored > 1:
                problems.append(f"write {key} is stored {stored} times")
            elif record.succeeded and stored == 0:
                problems.append(f"write {key} was acknowledged ({record.answers}) but is not stored")
            elif not record.succeeded and stored:
                problems.append(f"write {key} is stored although its client only saw {record.answers}")
        return problems

    def close(self) -> None:
        for client in self.clients:
            client.close()


def switches_under_load(users: Users, switches: Sequence[Callable[[], Result]], *, rate: float
                        ) -> tuple[list[Result], Recorder]:
    """Release switches (deploys, rollbacks, scales: any callable) one after another while the
    users poll readiness, read and write at `rate`, every answer counted: the load runs from 50
    answers before the first switch to 50 after the last. Then the writes that failed are
    retried with their keys, as clients do, so verify_writes() can check the ledger."""
    users.forget_writes()
    load = LoadRun([("ready", users.ready), ("read", users.read), ("write", users.write)], rate=rate,
                   duration=400, max_requests=80_000, workers=len(users.clients))
    load.start()
    try:
        wait_for(lambda: sum(o.ok for o in load.recorder.outcomes) >= 50, 30, "traffic flowing first")
        results = [switch() for switch in switches]
        returned = time.monotonic()
        wait_for(lambda: sum(o.ok for o in load.recorder.outcomes if o.started > returned) >= 50, 30,
                 "traffic after the switch")
    finally:
        load.stop()
        recorder = load.join(60)
    users.retry_failed_writes()
    return results, recorder
