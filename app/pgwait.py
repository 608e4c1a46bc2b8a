"""A client-side bound on every wait for Postgres, under gevent and plain threads alike.

Two server-side settings are not enough on their own:
- libpq's `connect_timeout` is not enforced once psycopg2 runs with a wait callback, which
  gevent needs (measured: a connect to a frozen server hung until killed);
- `statement_timeout` only works while the server is alive to enforce it.
A frozen or black-holed server would then hold a request, and its pooled connection, forever.

So psycopg2 runs every network wait through the callback below, which gives up when
- connecting takes longer than the connect timeout, or
- the current deadline passes: each request sets one (DB_REQUEST_TIMEOUT) for all of its
  round trips together, and readiness sets its own per check.
It then raises DatabaseTimeout. Outside a deadline (a CLI command, a migration) only the
connect is bounded, so that a long migration is never cut short.

psycopg2 closes a connection whose wait callback raised, and the pool discards it: a late
answer is never read by the next request, and a transaction whose COMMIT was never sent dies
with the connection when the server resumes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import psycopg2
from psycopg2 import extensions

# Monotonic time by which the current request must stop waiting on Postgres. A greenlet (or
# thread) has its own context, so concurrent requests never see each other's deadline.
_deadline: ContextVar[float] = ContextVar("postgres_deadline", default=math.inf)


class DatabaseTimeout(psycopg2.OperationalError):
    """Postgres did not answer within the client-side bound; the connection is closed."""


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Bound the total time the code inside may wait on Postgres. Nested deadlines never
    extend an outer one."""
    token = _deadline.set(min(_deadline.get(), time.monotonic() + seconds))
    try:
        yield
    finally:
        _deadline.reset(token)


def install(connect_timeout: float) -> None:
    """Make psycopg2 wait through the bounded callback, for every connection in this process.

    Under gevent (a monkey-patched socket module) the waits are gevent's, so a waiting query
    parks one greenlet rather than the worker; otherwise they block the calling thread, as
    psycopg2 always does, but still with the bound.
    """
    wait_read, wait_write = _wait_functions()

    def wait(connection, timeout=None):
        connecting = connection.status == extensions.STATUS_SETUP
        own_limit = time.monotonic() + connect_timeout if connecting else math.inf
        give_up_at = min(own_limit, _deadline.get())
        while True:
            state = connection.poll()
            if state == extensions.POLL_OK:
                return
            left = give_up_at - time.monotonic()
            waiting = wait_read if state == extensions.POLL_READ else wait_write
            if left <= 0 or not waiting(connection.fileno(), left):
                step = "connecting" if connecting else "a query"
                limit = f"{connect_timeout:g} s" if give_up_at == own_limit else "the deadline"
                raise DatabaseTimeout(f"no answer from Postgres to {step} within {limit}")

    extensions.set_wait_callback(wait)


def _wait_functions():
    """(wait_read, wait_write): each takes (fd, timeout) and returns False on timeout."""
    from gevent import monkey

    if monkey.is_module_patched("socket"):
        from gevent.socket import wait_read as gevent_read
        from gevent.socket import wait_write as gevent_write

        def on(wait):
            def bounded(fd, timeout):
                try:
                    wait(fd, timeout=None if timeout == math.inf else timeout)
                except TimeoutError:
                    return False
                return True
            return bounded

        return on(gevent_read), on(gevent_write)

    import select

    def on(mask):
        def bounded(fd, timeout):
            poller = select.poll()
            poller.register(fd, mask)
            return bool(poller.poll(None if timeout == math.inf else math.ceil(timeout * 1000)))
        return bounded

    return on(select.POLLIN), on(select.POLLOUT)
