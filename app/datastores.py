"""Postgres (SQLAlchemy), Redis, server-side sessions and migrations, bound to one app."""

from __future__ import annotations

from pathlib import Path

from cachelib import FileSystemCache
from flask import Flask, Request
from flask.sessions import SessionInterface
from flask_session import Session
from redis import Redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from .extensions import db, migrate

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# Load balancers poll these without cookies; they must never wait on the session store.
SESSIONLESS_PATH_PREFIXES = ("/health",)


def init_app(app: Flask) -> None:
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite") or not app.config["REDIS_URL"]:
        # the embedded default keeps its SQLite file and sessions there
        Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options(app.config)
    db.init_app(app)
    migrate.init_app(app, db, directory=str(MIGRATIONS_DIR))
    app.extensions["redis"] = redis_client(app.config) if app.config["REDIS_URL"] else None
    init_sessions(app)


def engine_options(config: dict) -> dict:
    """Fail fast rather than hang: every wait on the database is bounded."""
    if not config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        return {"pool_pre_ping": True}
    return {
        # a connection that died while pooled (db restart, failover) is replaced, not handed out
        "pool_pre_ping": True,
        # gevent serves many requests per worker, but only this many hold a connection at once;
        # the rest wait at most pool_timeout and then get a 503, instead of queueing forever
        "pool_size": config["DB_POOL_SIZE"],
        "max_overflow": config["DB_MAX_OVERFLOW"],
        "pool_timeout": config["DB_POOL_TIMEOUT"],
        # recycle before common idle cut-offs of proxies such as PgBouncer or cloud load balancers
        "pool_recycle": 1800,
        "connect_args": {
            "connect_timeout": config["DB_CONNECT_TIMEOUT"],
            "options": f"-c statement_timeout={config['DB_STATEMENT_TIMEOUT_MS']}",
            "application_name": "flask-kit",
        },
    }


def redis_client(config: dict) -> Redis:
    """Explicit timeouts and retries, rather than whatever defaults this redis-py version has."""
    return Redis.from_url(
        config["REDIS_URL"],
        socket_timeout=config["REDIS_SOCKET_TIMEOUT"],
        socket_connect_timeout=config["REDIS_CONNECT_TIMEOUT"],
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), config["REDIS_RETRIES"]),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        # PING a connection that sat idle this long before reusing it
        health_check_interval=config["REDIS_HEALTH_CHECK_INTERVAL"],
    )


def init_sessions(app: Flask) -> None:
    """Server-side sessions in Redis, or in instance/ files when running embedded."""
    app.config["SESSION_PERMANENT"] = True
    app.config["PERMANENT_SESSION_LIFETIME"] = app.config["SESSION_LIFETIME_SECONDS"]
    app.config["SESSION_KEY_PREFIX"] = "session:"
    if app.extensions["redis"] is not None:
        app.config["SESSION_TYPE"] = "redis"
        app.config["SESSION_REDIS"] = app.extensions["redis"]
    else:
        app.config["SESSION_TYPE"] = "cachelib"
        app.config["SESSION_CACHELIB"] = FileSystemCache(str(Path(app.instance_path) / "sessions"))
    Session(app)
    app.session_interface = SessionlessPaths(app.session_interface, SESSIONLESS_PATH_PREFIXES)


class SessionlessPaths(SessionInterface):
    """Skips the session store for some paths, and delegates everything else."""

    def __init__(self, inner: SessionInterface, prefixes: tuple[str, ...]):
        self.inner = inner
        self.prefixes = prefixes

    def open_session(self, app: Flask, request: Request):
        if request.path.startswith(self.prefixes):
            return self.make_null_session(app)
        return self.inner.open_session(app, request)

    def save_session(self, app: Flask, session, response) -> None:
        self.inner.save_session(app, session, response)

    def regenerate(self, session) -> None:
        self.inner.regenerate(session)
