"""Liveness and readiness for load balancers and orchestrators.

Bodies follow the draft "Health Check Response Format for HTTP APIs"
(draft-inadarei-api-health-check): media type application/health+json, `status` pass | warn |
fail, and per-component `checks`.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

from flask import Blueprint, Flask, current_app, jsonify
from gevent import Timeout
from sqlalchemy.exc import ProgrammingError

from . import metrics, pgwait
from .datastores import migration_revisions, schema_state
from .extensions import db

HEALTH_JSON = "application/health+json"

bp = Blueprint("health", __name__)


LIVENESS_PATH = "/health"


@bp.get(LIVENESS_PATH)
def liveness():
    """Answers for as long as the process serves requests; touches nothing else. GET and HEAD
    get this answer from LivenessAnswer, before Flask; other methods get Flask's 405."""
    return health_response({"status": "pass"}, 200)


class LivenessAnswer:
    """WSGI: GET and HEAD /health answered before Flask, with the view's answer, made once.

    Load balancers poll liveness on every instance all day. Through Flask each poll cost a
    request context, routing and a Response object, for an answer that never changes: a third
    of a loaded worker's samples, and answering here cut its CPU per poll from 0.68 to 0.42 ms
    (docs/benchmarks.md). It sits inside the request id middleware, so a poll still carries
    and logs its X-Request-ID.
    """

    def __init__(self, app: Flask):
        self.wsgi_app = app.wsgi_app
        with app.test_request_context(LIVENESS_PATH):  # no session: /health opens none
            answer = liveness()
        self.status, self.headers, self.body = answer.status, list(answer.headers.items()), answer.get_data()

    def __call__(self, environ, start_response):
        method = environ.get("REQUEST_METHOD")
        if environ.get("PATH_INFO") != LIVENESS_PATH or method not in ("GET", "HEAD"):
            return self.wsgi_app(environ, start_response)
        environ[metrics.ROUTE_KEY] = LIVENESS_PATH
        start_response(self.status, list(self.headers))
        return [b""] if method == "HEAD" else [self.body]


@bp.get("/health/ready")
def readiness():
    """Whether this instance should get traffic: database, Redis and schema are all usable."""
    report = current_app.extensions["readiness"].report()
    return health_response(report, 503 if report["status"] == "fail" else 200)


def health_response(body: dict, status: int):
    response = jsonify(body)
    response.status_code = status
    response.mimetype = HEALTH_JSON
    response.headers["Cache-Control"] = "no-store"
    return response


class Readiness:
    """Probes each dependency at most once per TTL per worker, however hard it is polled.

    One caller probes while concurrent callers wait for its result (the lock is cooperative
    under gevent), so a burst of polls never turns into a burst of queries.
    """

    def __init__(self, app: Flask, migration_heads: set[str], known_revisions: set[str]):
        self.app = app
        self.ttl = app.config["HEALTH_CACHE_TTL"]
        self.timeout = app.config["HEALTH_CHECK_TIMEOUT"]
        self.migration_heads = migration_heads
        self.known_revisions = known_revisions
        self.probe_count = 0
        self._lock = threading.Lock()
        self._report: dict | None = None
        self._expires_at = 0.0

    def report(self) -> dict:
        with self._lock:
            if self._report is None or time.monotonic() >= self._expires_at:
                self._report = self._probe()
                self._expires_at = time.monotonic() + self.ttl
            return self._report

    def _probe(self) -> dict:
        self.probe_count += 1
        database = "postgres" if db.engine.dialect.name == "postgresql" else db.engine.dialect.name
        revisions: set[str] = set()

        def read_revisions():
            revisions.update(self._read_revisions())

        database_check = self._check(read_revisions)
        checks = {
            f"{database}:responseTime": database_check,
            # read by the same round trip: the database check's timing, the schema's verdict
            "migrations:head": [{**database_check[0], **self._schema_verdict(database_check[0], revisions)}],
            "redis:responseTime": self._check(self._ping_redis),
        }
        for name, (entry,) in checks.items():
            metrics.record_readiness(name.split(":")[0], entry["status"] != "fail", entry["observedValue"] / 1000)
        statuses = {entry[0]["status"] for entry in checks.values()}
        overall = "fail" if "fail" in statuses else "warn" if "warn" in statuses else "pass"
        report = {"status": overall, "checks": checks}
        if self.app.config["APP_RELEASE"]:
            report["releaseId"] = self.app.config["APP_RELEASE"]
        return report

    def _check(self, probe) -> list[dict]:
        started = time.perf_counter()
        status, output = "pass", None
        try:
            # Postgres waits end at the deadline, which also discards the connection; gevent's
            # Timeout is the backstop for anything else that waits on the network
            with pgwait.deadline(self.timeout), Timeout(self.timeout + 0.5, ProbeTimeout):
                outcome = probe()
            if outcome:
                status, output = outcome
        except Exception as error:  # noqa: BLE001 - any failure means "not ready", never a 500
            timed_out = isinstance(error, ProbeTimeout) or isinstance(getattr(error, "orig", None),
                                                                      pgwait.DatabaseTimeout)
            status = "fail"
            output = f"timed out after {self.timeout:g} s" if timed_out else f"unavailable ({type(error).__name__})"
        result = {
            "componentType": "datastore",
            "observedValue": round((time.perf_counter() - started) * 1000, 2),
            "observedUnit": "ms",
            "status": status,
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        }
        if output:
            result["output"] = output
        return [result]

    @staticmethod
    def _read_revisions() -> set[str]:
        """Reachability and schema in one connection and one round trip: the pool's checkout
        costs none, and a GET runs in autocommit, so no BEGIN or ROLLBACK (app/datastores.py)."""
        with db.engine.connect() as connection:
            try:
                return set(connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalars())
            except ProgrammingError:  # no alembic_version table: never migrated
                return set()

    def _schema_verdict(self, database_check: dict, revisions: set[str]) -> dict:
        if database_check["status"] != "pass":
            return {"status": "fail", "output": "not checked: the database is unavailable"}
        return {
            "head": {"status": "pass"},
            "unmigrated": {"status": "fail", "output": "no schema: run `flask --app wsgi db upgrade`"},
            # a newer release migrated first: this code may still run against the expanded schema
            "ahead": {"status": "warn", "output": "database is ahead of this release's migrations"},
            "behind": {"status": "fail", "output": "database schema is behind: run `flask --app wsgi db upgrade`"},
        }[schema_state(revisions, self.migration_heads, self.known_revisions)]

    def _ping_redis(self):
        client = self.app.extensions["redis"]
        if client is None:
            return "warn", "not configured: sessions use the local store"
        client.ping()


class ProbeTimeout(Exception):
    pass


def init_app(app: Flask) -> None:
    app.extensions["readiness"] = Readiness(app, *migration_revisions())
    app.register_blueprint(bp)
    app.wsgi_app = LivenessAnswer(app)
