"""Postgres (SQLAlchemy), Redis and migrations, bound to one app, each with bounded waits."""

from __future__ import annotations

import collections
import os
import select
import threading
from pathlib import Path

from flask import Flask, has_request_context, request
from redis import Redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.retry import Retry
from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.pool import QueuePool
from sqlalchemy.util import queue as sqla_queue

from . import metrics, pgwait
from .extensions import db, migrate

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def init_app(app: Flask) -> None:
    config = app.config
    if config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite") or not config["REDIS_URL"]:
        # the embedded default keeps its SQLite file and sessions there
        Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    postgres = config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql")
    # A failed statement's message names its SQL, and without this its parameters too: emails,
    # password hashes and idempotency keys would reach the logs and Sentry in the exception text.
    config["SQLALCHEMY_ENGINE_OPTIONS"] = {"hide_parameters": True, **(engine_options(config) if postgres else {})}
    db.init_app(app)
    migrate.init_app(app, db, directory=str(MIGRATIONS_DIR))
    if postgres:
        pgwait.install(config["DB_CONNECT_TIMEOUT"])
        with app.app_context():
            watch_connections(db.engine)
            autocommit_safe_requests(db.engine)
        wrap_requests_in_deadline(app, config["DB_REQUEST_TIMEOUT"])
    app.extensions["redis"] = redis_client(config) if config["REDIS_URL"] else None


def migration_revisions() -> tuple[set[str], set[str]]:
    """The heads of migrations/, and every revision it knows."""
    from alembic.script import ScriptDirectory
    from alembic.util.exc import CommandError

    try:
        scripts = ScriptDirectory(str(MIGRATIONS_DIR))
        return set(scripts.get_heads()), {script.revision for script in scripts.walk_revisions()}
    except CommandError as error:
        raise RuntimeError(f"cannot read migrations in {MIGRATIONS_DIR}: {error}") from error


def schema_state(revisions: set[str], heads: set[str], known: set[str]) -> str:
    """Where a database's alembic_version stands against this release's migrations: "head",
    "unmigrated", "ahead" (a newer release migrated first: expand/contract allows it) or
    "behind"."""
    if revisions == heads:
        return "head"
    if not revisions:
        return "unmigrated"
    return "ahead" if revisions - known else "behind"


def engine_options(config: dict) -> dict:
    return {
        # No pool_pre_ping: a round trip on every checkout. Dead connections are found for free
        # at checkout instead (watch_connections), and a disconnect seen mid-request
        # invalidates the whole pool, so the next checkouts reconnect.
        # Gevent serves many requests per worker, but only this many hold a connection at once;
        # the rest wait at most pool_timeout, then get a 503, instead of queueing forever.
        "poolclass": MeteredQueuePool,
        "pool_size": config["DB_POOL_SIZE"],
        "max_overflow": config["DB_MAX_OVERFLOW"],
        "pool_timeout": config["DB_POOL_TIMEOUT"],
        # recycle before common idle cut-offs of proxies such as PgBouncer or cloud load balancers
        "pool_recycle": 1800,
        "connect_args": {
            # also enforced client-side by app/pgwait.py, which gevent needs
            "connect_timeout": config["DB_CONNECT_TIMEOUT"],
            "options": f"-c statement_timeout={config['DB_STATEMENT_TIMEOUT_MS']}",
            "application_name": "flask-kit",
            # A vanished host (not a stopped server: its kernel still acks) is found by TCP:
            # idle connections are probed after 30 s and dropped after 3 unanswered probes;
            # data left unacknowledged for 10 s drops the connection.
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
            "tcp_user_timeout": 10_000,
        },
    }


class FairQueue(sqla_queue.Queue):
    """SQLAlchemy's pool queue, handing connections out in the order they were asked for.

    Its own get() waits on a condition and, woken, takes a connection only if one is still
    there: a greenlet that asks just as a connection comes back takes it first, and the one
    woken for it waits again, at the back. Under gevent, with more requests than connections
    (the pool is DB_POOL_SIZE per worker, a worker serves hundreds), a request can be passed over
    again and again, and sits in the tail (bench/changes.md has what it measured). Here a
    returned connection goes straight to the longest waiter, and no one takes a free connection
    while others wait. A waiter still gives up at pool_timeout."""

    def __init__(self, maxsize: int = 0, use_lifo: bool = False):
        super().__init__(maxsize, use_lifo)
        self.waiters: collections.deque[_Waiter] = collections.deque()

    def put(self, item, block: bool = True, timeout: float | None = None) -> None:
        with self.mutex:  # held across the queue's own put (a reentrant lock): no one queues between
            if self.waiters:
                waiter = self.waiters.popleft()
                waiter.item = item
                waiter.ready.set()
            else:
                super().put(item, block, timeout)

    def get(self, block: bool = True, timeout: float | None = None):
        with self.mutex:
            if not self.waiters and not self._empty():
                return self._get()
            if not block:
                raise sqla_queue.Empty
            waiter = _Waiter()
            self.waiters.append(waiter)
        waiter.ready.wait(timeout)
        with self.mutex:
            if waiter.ready.is_set():  # handed one as its wait ended
                return waiter.item
            self.waiters.remove(waiter)
            raise sqla_queue.Empty


class _Waiter:
    __slots__ = ("ready", "item")

    def __init__(self):
        self.ready = threading.Event()  # gevent's, once patched
        self.item = None


class MeteredQueuePool(QueuePool):
    """SQLAlchemy's pool, reporting to the metrics (app/metrics.py) how many connections are
    out, and the checkouts that found none free and had to wait, or gave up at pool_timeout.
    `connect()` is the pool's one entry (Engine.raw_connection); a connection always comes back
    through `_do_return_conn`. Each reports the count it sees, so no path can make it drift."""

    _queue_class = FairQueue

    def __init__(self, creator, pool_size: int = 5, max_overflow: int = 10, **options):
        super().__init__(creator, pool_size=pool_size, max_overflow=max_overflow, **options)
        self.limit = pool_size + max_overflow if max_overflow >= 0 else None
        self._limit_reported_by: int | None = None  # the process: the master builds it, workers use it

    def connect(self):
        if self._limit_reported_by != os.getpid() and self.limit is not None:
            metrics.DB_POOL_LIMIT.set(self.limit)
            self._limit_reported_by = os.getpid()
        if self.limit is not None and self.checkedin() == 0 and self.checkedout() >= self.limit:
            metrics.DB_POOL_WAITS.inc()
        try:
            return super().connect()
        except PoolTimeoutError:
            metrics.DB_POOL_TIMEOUTS.inc()
            raise
        finally:
            metrics.DB_POOL_CHECKED_OUT.set(self.checkedout())

    def _do_return_conn(self, record) -> None:
        super()._do_return_conn(record)
        metrics.DB_POOL_CHECKED_OUT.set(self.checkedout())


def watch_connections(engine) -> None:
    """Discard dead connections without a round trip, and never reuse one that timed out."""
    poll = _unpatched_poll()

    @event.listens_for(engine, "checkout")
    def refuse_dead(dbapi_connection, connection_record, connection_proxy):
        # An idle connection has nothing to read, unless the server hung up on it (a restart,
        # a terminated backend): then its socket is readable. Checking costs one poll(0).
        poller = poll()
        poller.register(dbapi_connection.fileno(), select.POLLIN)
        if poller.poll(0):
            raise DisconnectionError("the server closed this idle connection")  # the pool retries

    @event.listens_for(engine, "handle_error")
    def timeouts_are_disconnects(context):
        # psycopg2 has closed it already; this makes the pool drop it, and recycle the others
        if isinstance(context.original_exception, pgwait.DatabaseTimeout):
            context.is_disconnect = True


def fetch_rows(connection, sql: str, parameters) -> list[tuple]:
    """The rows of one statement in the driver's SQL, as plain tuples, straight from the driver's
    cursor on `connection` (a Connection from the engine).

    exec_driver_sql would build an execution context, the result's metadata and a Row for each
    row on every call: more CPU than a page read's own round trip (bench/changes.md). A failure
    takes the path it takes there, SQLAlchemy's Connection._handle_dbapi_exception: wrapped
    as DBAPIError with the parameters hidden, the handle_error events (timeouts_are_disconnects
    below), and on a disconnect, or an exit such as gevent's Timeout, the connection and the
    pool invalidated. tests/app/test_datastores.py holds it to that. What it skips is the
    cursor events: the statement leaves no Sentry breadcrumb or span."""
    cursor = connection.connection.cursor()
    try:
        cursor.execute(sql, parameters)
        rows = cursor.fetchall()
    except BaseException as error:
        connection._handle_dbapi_exception(error, sql, parameters, cursor, None)  # raises
    cursor.close()
    return rows


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def autocommit_safe_requests(engine) -> None:
    """A GET runs its queries in autocommit: psycopg2 then sends no BEGIN before the first and
    no ROLLBACK when the connection goes back to the pool, two round trips of three for a
    one-query read. Safe requests only read, and each statement still sees a consistent
    snapshot; writes keep their transaction."""

    @event.listens_for(engine, "engine_connect")
    def on_connect(connection):
        if has_request_context() and request.method in SAFE_METHODS:
            connection.connection.driver_connection.autocommit = True

    @event.listens_for(engine, "checkin")
    def reset(dbapi_connection, connection_record):
        # client-side only (no round trip); an invalidated connection checks in as None, a
        # closed one is about to be discarded
        if dbapi_connection is not None and not dbapi_connection.closed:
            dbapi_connection.autocommit = False


def _unpatched_poll():
    """select.poll as the OS provides it: gevent's patching removes it from `select`, and a
    zero-timeout poll never blocks, so the original is safe inside a greenlet."""
    from gevent import monkey

    return monkey.get_original("select", "poll") if monkey.is_module_patched("select") else select.poll


def wrap_requests_in_deadline(app: Flask, seconds: float) -> None:
    """Each request may wait on Postgres DB_REQUEST_TIMEOUT seconds in all: every round trip of
    the request, its teardown's included, shares one deadline. (A wait for a pooled
    connection has its own bound, DB_POOL_TIMEOUT.)"""
    inner = app.wsgi_app

    def with_deadline(environ, start_response):
        with pgwait.deadline(seconds):
            return inner(environ, start_response)

    app.wsgi_app = with_deadline


class MeteredRedis(Redis):
    """redis-py's client, counting each command and pipeline that failed, by its exception's
    class (app/metrics.py), once, after its retries."""

    def execute_command(self, *args, **options):
        try:
            return super().execute_command(*args, **options)
        except RedisError as error:
            metrics.count_redis_error(error)
            raise

    def pipeline(self, transaction=True, shard_hint=None) -> Pipeline:
        return MeteredPipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)


class MeteredPipeline(Pipeline):
    def execute(self, raise_on_error: bool = True):
        try:
            return super().execute(raise_on_error)
        except RedisError as error:
            metrics.count_redis_error(error)
            raise


def redis_client(config: dict) -> Redis:
    """Each operation waits at most REDIS_TIMEOUT. Only refused or reset connections (instant,
    and cured by reconnecting) are retried: a retry after a timeout would double the wait on
    a frozen server for nothing."""
    return MeteredRedis.from_url(
        config["REDIS_URL"],
        socket_timeout=config["REDIS_TIMEOUT"],
        socket_connect_timeout=config["REDIS_TIMEOUT"],
        retry=Retry(ExponentialWithJitterBackoff(base=0.02, cap=0.1), config["REDIS_RETRIES"],
                    supported_errors=(RedisConnectionError,)),
        # PING a connection that sat idle this long before reusing it
        health_check_interval=config["REDIS_HEALTH_CHECK_INTERVAL"],
    )
