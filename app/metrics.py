"""Prometheus metrics: the requests, the database pool, Redis, readiness, the build and Gunicorn's
workers, served on Gunicorn's metrics port (METRICS_PORT), which nginx never proxies.

Under Gunicorn this runs in prometheus-client's multiprocess mode: each process writes its values
to memory-mapped files in PROMETHEUS_MULTIPROC_DIR, which gunicorn.conf.py makes fresh for each
start before anything imports prometheus_client, and a scrape adds up the files of every process,
those of exited workers included, so counters survive a worker restart. The master marks an
exited worker dead (child_exit), so its gauges of things in progress stop counting. Without that
directory (tests, the CLI) the values live in this process.

A request pays for its metrics in the worker, with no lock held across a yield: two clock reads,
the in-flight gauge up and down, one counter and one histogram observation (bucket and sum),
five writes of 16 bytes into a memory map (12 to 15 µs of CPU in all, measured in one process
on 2 cores); the labels' child series are looked up once per route, method and status and
kept. A scrape costs reading the files, in whichever worker takes it.

Names the docs (docs/operations.md) and deploy/prometheus/ rely on; change them together.
This module imports no other part of the app at import time: gunicorn.conf.py imports it in the
master.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.metrics import Counter, Gauge, Histogram
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.values import ValueClass

if TYPE_CHECKING:
    from flask import Flask

METRICS_PATH = "/metrics"
# An API's answers: 5 ms (a cached read) to 10 s (DB_REQUEST_TIMEOUT, the longest a request
# may wait on Postgres). Prometheus's default buckets stop at 10 s too, but start at 5 ms with
# too few steps below 100 ms, where this API's answers are.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# The route label of a request no route took (404, and 405 for a method the route does not take):
# never the raw path, which a client chooses.
UNMATCHED = "unmatched"
# Where a WSGI layer that answers before Flask names the route it answered (environ, a template):
# LivenessAnswer (app/health.py) sets it for /health.
ROUTE_KEY = "flask_kit.route"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# --- requests ---------------------------------------------------------------------------------
REQUESTS = Counter("http_requests", "Requests answered, by route template, method and status.",
                   ["route", "method", "status"])
REQUEST_DURATION = Histogram("http_request_duration_seconds",
                             "Time to produce each answer (until the app returns it), by route template and method.",
                             ["route", "method"], buckets=LATENCY_BUCKETS)
IN_FLIGHT = Gauge("http_requests_in_flight", "Requests being answered now.", multiprocess_mode="livesum")
# the same class names the log line "dependency unavailable: ..." carries (app/errors.py)
UNAVAILABLE = Counter("http_dependency_unavailable",
                      "Requests answered 503 because Postgres or Redis was down, saturated or full, by the "
                      "exception's class.", ["cause"])

# --- datastores -------------------------------------------------------------------------------
DB_POOL_CHECKED_OUT = Gauge("db_pool_checked_out", "Database connections in use.", multiprocess_mode="livesum")
DB_POOL_LIMIT = Gauge("db_pool_limit", "Database connections the pools may hold (DB_POOL_SIZE + DB_MAX_OVERFLOW "
                      "per worker).", multiprocess_mode="livesum")
DB_POOL_WAITS = Counter("db_pool_waits", "Checkouts that found every connection in use and had to wait.")
DB_POOL_TIMEOUTS = Counter("db_pool_timeouts", "Checkouts that waited DB_POOL_TIMEOUT and gave up (a 503).")
REDIS_ERRORS = Counter("redis_errors", "Redis commands and pipelines that failed, by redis-py's exception class "
                       "(TimeoutError: no answer within REDIS_TIMEOUT).", ["error"])

# --- readiness --------------------------------------------------------------------------------
# The most recent probe of any worker wins: each worker probes on its own (app/health.py).
READINESS_OK = Gauge("readiness_check_ok", "1 if the last readiness probe of this dependency passed (or "
                     "warned), 0 if it failed.", ["check"], multiprocess_mode="livemostrecent")
READINESS_DURATION = Gauge("readiness_check_duration_seconds", "How long the last readiness probe of this "
                           "dependency took.", ["check"], multiprocess_mode="livemostrecent")

# --- the build and Gunicorn -------------------------------------------------------------------
BUILD_INFO = Gauge("app_build_info", "Always 1; the labels say which release runs, and where.",
                   ["release", "environment"], multiprocess_mode="max")
# set by the master only (gunicorn.conf.py)
GUNICORN_WORKERS = Gauge("gunicorn_workers", "Gunicorn workers running.", multiprocess_mode="max")
GUNICORN_WORKER_RESTARTS = Counter("gunicorn_worker_restarts", "Workers that exited while the master went on "
                                   "(a crash, a WORKER TIMEOUT, the OOM killer, max_requests, a reload) and "
                                   "were replaced.")


class RequestMetrics:
    """WSGI, outermost: times and counts every answer, and answers scrapes on the metrics port.

    On that port it answers GET /metrics and 404 to anything else, so the port serves nothing of
    the app; on any other port /metrics goes on to Flask, which has no such route (a 404). The
    port is told by SERVER_PORT, which Gunicorn sets from the TCP listener that took the
    connection (ProxyFix, which could change it, runs inside this). Only when it matches is the
    socket itself asked, off the hot path: behind a unix socket Gunicorn takes SERVER_PORT from
    the Host header instead."""

    def __init__(self, app: Flask):
        self.app = app
        self.wsgi_app = app.wsgi_app
        self.port = str(app.config["METRICS_PORT"])
        self.registry = scrape_registry()
        self._series: dict[tuple[str, str, str], tuple] = {}

    def __call__(self, environ, start_response):
        if environ.get("SERVER_PORT") == self.port and self.on_metrics_listener(environ):
            return self.scrape(environ, start_response)
        started = time.perf_counter()
        code, route = "500", UNMATCHED  # what an app that raised instead of answering gets

        def start_response_noting_route(status, headers, exc_info=None):
            nonlocal code, route
            code = status[:3]
            # Flask's request, while its context is still pushed (it is cleared before the
            # answer is returned); a layer that answered before Flask named its route instead
            rule = getattr(environ.get("werkzeug.request"), "url_rule", None)
            route = rule.rule if rule is not None else environ.get(ROUTE_KEY, UNMATCHED)
            return start_response(status, headers, exc_info)

        IN_FLIGHT.inc()
        try:
            return self.wsgi_app(environ, start_response_noting_route)
        finally:
            IN_FLIGHT.dec()
            self.observe(route, environ.get("REQUEST_METHOD", ""), code, time.perf_counter() - started)

    def observe(self, route: str, method: str, status: str, seconds: float) -> None:
        if method not in METHODS:
            method = "other"  # a client's made-up method must not make a series
        key = (route, method, status)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = (REQUESTS.labels(route, method, status),
                                          REQUEST_DURATION.labels(route, method))
        series[0].inc()
        series[1].observe(seconds)

    def on_metrics_listener(self, environ) -> bool:
        sock = environ.get("gunicorn.socket")
        if sock is None:  # not Gunicorn (the test client): SERVER_PORT is all there is
            return True
        name = sock.getsockname()
        return isinstance(name, tuple) and str(name[1]) == self.port

    def scrape(self, environ, start_response):
        if environ.get("PATH_INFO") != METRICS_PATH or environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "10")])
            return [b"not found\n"]
        with self.app.app_context():
            # each scrape refreshes readiness (at most once per HEALTH_CACHE_TTL), so the
            # readiness metrics are current even where nothing polls /health/ready
            self.app.extensions["readiness"].report()
        body = generate_latest(self.registry)
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(body))),
                                  ("Cache-Control", "no-store")])
        return [b""] if environ["REQUEST_METHOD"] == "HEAD" else [body]


def scrape_registry():
    """Every process's values (multiprocess mode), or this process's own."""
    if not ValueClass._multiprocess:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return registry


def count_unavailable(cause: str) -> None:
    UNAVAILABLE.labels(cause).inc()


def count_redis_error(error: Exception) -> None:
    REDIS_ERRORS.labels(type(error).__name__).inc()


def record_readiness(check: str, ok: bool, seconds: float) -> None:
    READINESS_OK.labels(check).set(1 if ok else 0)
    READINESS_DURATION.labels(check).set(seconds)


def worker_started(workers_after: int) -> None:
    """In the master, about to fork a worker (gunicorn.conf.py's pre_fork)."""
    GUNICORN_WORKERS.set(workers_after)


def worker_exited(pid: int, workers_left: int, replaced: bool) -> None:
    """In the master, once a worker has exited (gunicorn.conf.py's child_exit): its gauges of
    things in progress stop counting; its counters keep counting."""
    if ValueClass._multiprocess:
        mark_process_dead(pid)
    GUNICORN_WORKERS.set(workers_left)
    if replaced:
        GUNICORN_WORKER_RESTARTS.inc()


def init_app(app: Flask) -> None:
    config = app.config
    if not config["METRICS_PORT"]:
        return  # metrics off: nothing would serve what each request counted
    BUILD_INFO.labels(config["APP_RELEASE"] or "unknown", config["SENTRY_ENVIRONMENT"]).set(1)
    app.wsgi_app = RequestMetrics(app)
