"""Gunicorn settings: every one can be overridden from the environment.

Reference: https://docs.gunicorn.org/en/stable/settings.html (checked against gunicorn 27).
This file is imported by the master. It imports only the app's leaf modules (config, the log
format, the CPU count), never the app itself. The app is loaded once, in the master, when the
master was started by gevent's launcher, which patches the standard library before anything
imports it (the Dockerfile's command, `make run`):

    python -m gevent.monkey --module gunicorn --config gunicorn.conf.py wsgi:app

Started as plain `gunicorn`, each worker loads the app itself after patching (preload off).
"""

import gc
import logging
import os
import shutil
import sys
import tempfile

from gunicorn.glogging import Logger

from app.capacity import available_cpus
from app.config import APP_LOAD_ERROR, ConfigError, load_config
from app.jsonlog import json_formatter


def env(name: str, default: str) -> str:
    """An environment value; unset and empty both mean the default."""
    return os.environ.get(name) or default


# --- Server socket --------------------------------------------------------------------------
# Loopback by default: natively the app must only be reachable through the proxy. Containers set
# 0.0.0.0:8000, and there only nginx shares the network with web. Default: 127.0.0.1:8000.
bind = env("GUNICORN_BIND", "127.0.0.1:8000")

# --- Workers --------------------------------------------------------------------------------
# gevent serves many concurrent requests per process, so one worker per core is enough; more
# only adds memory (and database connections). "Cores" are the container's CPU quota (the
# cgroup's cpu.max, or cpu.cfs_quota_us on v1: what Compose's `cpus:` sets) or its affinity
# mask, not the host's count: on an 8-core host a `cpus: 1.0` container gets 1 worker, not 8.
# Gunicorn's default: 1.
workers = int(env("WEB_CONCURRENCY", str(available_cpus())))
# Cooperative I/O: a slow query or upstream call parks one greenlet, not the whole worker.
# gevent's worker, whose stop answers every connection the kernel had already queued for it
# instead of resetting it (app/gunicorn_worker.py): a release then drops no request.
# Default: sync. Set GUNICORN_WORKER_CLASS=sync to debug without gevent.
GEVENT_WORKERS = ("gevent", "app.gunicorn_worker.DrainingGeventWorker")
worker_class = env("GUNICORN_WORKER_CLASS", GEVENT_WORKERS[1])
# Concurrent requests per gevent worker. Database work is bounded separately by the SQLAlchemy
# pool (DB_POOL_SIZE + DB_MAX_OVERFLOW), so this mostly bounds slow clients. Default: 1000.
worker_connections = int(env("GUNICORN_WORKER_CONNECTIONS", "1000"))
# A worker silent for this long is killed and replaced. With gevent it only fires when a greenlet
# blocks the loop (CPU-bound work, an unpatched driver). Default: 30.
timeout = int(env("GUNICORN_TIMEOUT", "30"))
# On SIGTERM, workers get this long to finish in-flight requests. Compose's stop_grace_period
# must be longer, or Docker SIGKILLs them mid-request. Default: 30.
graceful_timeout = int(env("GUNICORN_GRACEFUL_TIMEOUT", "30"))
# Idle keep-alive connections from nginx stay open this long. It must exceed nginx's upstream
# keepalive_timeout (4s), so nginx always closes first and never reuses a socket Gunicorn is
# closing. Default: 2.
keepalive = int(env("GUNICORN_KEEPALIVE", "75"))
# Never recycle workers by default. Without preload, each recycle re-imports the app (~0.7 s of
# a core), and at 5000 requests a busy worker restarted every few seconds. Measured on 2 cores
# (wrk, /health at 64 connections through nginx, 8 s): 1,317 req/s, p99 2,710 ms and 1.13 ms of
# CPU per request with 5000; 2,008 req/s, p99 246 ms and 0.72 ms with recycling off. Worker
# memory stayed flat over `make bench` (docs/benchmarks.md). If workers grow (a leak in a
# dependency), set GUNICORN_MAX_REQUESTS; the jitter keeps them from restarting together.
# Default: 0 / 0.
max_requests = int(env("GUNICORN_MAX_REQUESTS", "0"))
max_requests_jitter = int(env("GUNICORN_MAX_REQUESTS_JITTER", "500"))
# Workers touch a heartbeat file; on a disk-backed /tmp (Docker's overlayfs) that write can
# stall and get healthy workers killed. /dev/shm is memory. Default: the system temp dir.
worker_tmp_dir = env("GUNICORN_WORKER_TMP_DIR", "/dev/shm" if os.path.isdir("/dev/shm") else "") or None
# Load the app once in the master and fork the workers from it: they share its memory copy-on-
# write (each worker's own share, PSS, fell from 66 to 32 MB here), start by forking instead of
# importing, and a recycled worker costs a fork. Only where gevent patched the master before
# any import (the launcher above): an app imported unpatched would keep blocking sockets and
# locks in every worker. The master opens no connection to Postgres or Redis (pools fill in
# the workers), so no socket is shared across the fork. Default: False.
preload_app = worker_class in GEVENT_WORKERS and "gevent.monkey" in sys.modules and \
    sys.modules["gevent.monkey"].is_module_patched("socket")

# --- Metrics --------------------------------------------------------------------------------
# Prometheus (app/metrics.py, docs/operations.md): Gunicorn also listens on METRICS_PORT (read by
# app/config.py; 9464), on the public bind's host, and there the app answers GET /metrics and
# nothing else; nginx proxies only the public bind. Any worker may take a scrape: every process
# writes its values to files in PROMETHEUS_MULTIPROC_DIR, and a scrape adds them up. The
# directory is this master's own, made empty at each start, so a restarted service never adds
# to the last one's counts and two Gunicorns on one host (or replicas sharing a /dev/shm) never
# share one; a reload (SIGHUP re-reads this file) keeps it, and the master removes it at exit.
# Memory-backed, like the heartbeat files. Set here, before the app (preloaded next) imports
# prometheus_client, which chooses its mode at import.
try:
    METRICS_PORT = load_config()["METRICS_PORT"]
except ConfigError:
    METRICS_PORT = 0  # on_starting prints the one line and exits 4


def fresh_metrics_dir() -> str:
    path = os.path.join(worker_tmp_dir or tempfile.gettempdir(), f"gunicorn-metrics-{os.getpid()}")
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR") != path:  # not a reload of this master
        shutil.rmtree(path, ignore_errors=True)
        os.mkdir(path, 0o700)
    return path


if METRICS_PORT:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = fresh_metrics_dir()
    from app import metrics

    public_host = "127.0.0.1" if bind.startswith(("unix:", "fd://")) else bind.rsplit(":", 1)[0]
    bind = [bind, f"{public_host}:{METRICS_PORT}"]

# --- Limits ---------------------------------------------------------------------------------
# The longest request line Gunicorn reads (8190 is its maximum): just above nginx's 8 KiB
# (large_client_header_buffers), so that whatever nginx passes on reaches the app, and an
# over-long URL is refused by nginx alone. Default: 4094.
limit_request_line = 8190

# --- Proxy ----------------------------------------------------------------------------------
# Which peers may set X-Forwarded-Proto and friends for Gunicorn itself. The app trusts
# X-Forwarded-* separately, by hop count (PROXY_FIX_HOPS). Default: 127.0.0.1,::1.
forwarded_allow_ips = env("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

# --- Control socket -------------------------------------------------------------------------
# Gunicorn 25.1+ opens a control socket under $HOME by default; a read-only container root has
# nowhere to put it, and several instances on one host would share it. Off unless a path is set.
control_socket_disable = not os.getenv("GUNICORN_CONTROL_SOCKET")
control_socket = env("GUNICORN_CONTROL_SOCKET", "")

# --- Logging --------------------------------------------------------------------------------
accesslog = "-"
errorlog = "-"
loglevel = env("LOG_LEVEL", "info").lower()
# Polled by load balancers (and Prometheus) every few seconds; at INFO they would drown real
# traffic.
QUIET_PATHS = frozenset({"/health", "/health/ready", "/metrics"})


class JsonLogger(Logger):
    """Gunicorn's error and access logs as JSON lines on stdout."""

    def setup(self, cfg):
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                if getattr(handler, "_gunicorn", False) and isinstance(handler, logging.StreamHandler):
                    handler.setStream(sys.stdout)
                    handler.setFormatter(json_formatter())

    def access(self, resp, req, environ, request_time):
        if not self.access_log_enabled:
            return
        path = environ.get("PATH_INFO", "")
        level = logging.DEBUG if path in QUIET_PATHS else logging.INFO
        if not self.access_log.isEnabledFor(level):
            return  # a poll at INFO: nothing to build
        status = int(str(resp.status).split(None, 1)[0])
        headers = {name.lower(): value for name, value in resp.headers}
        self.access_log.log(
            level, "%s %s %s", environ.get("REQUEST_METHOD"), path, status,
            extra={
                "request_id": headers.get("x-request-id"),
                "method": environ.get("REQUEST_METHOD"),
                "path": path,
                "status": status,
                "duration_ms": round(request_time.total_seconds() * 1000, 2),
                # the app's ProxyFix has already replaced the proxy's address with the client's
                "remote_addr": environ.get("REMOTE_ADDR"),
                "bytes": getattr(resp, "sent", None),
                "user_agent": environ.get("HTTP_USER_AGENT"),
            },
        )


logger_class = JsonLogger


def on_starting(server):
    """Check the configuration once, in the master, before any worker starts: a bad setting
    prints one line and exits 4, instead of every worker failing (and racing to report it)."""
    try:
        load_config()
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(APP_LOAD_ERROR) from None


def pre_fork(server, worker):
    if METRICS_PORT:
        metrics.worker_started(workers_after=len(server.WORKERS) + 1)


def post_worker_init(worker):
    """Once a worker has the app (forked from the preloading master, or imported itself), every
    object it holds moves out of the garbage collector's reach (gc.freeze). They live as long
    as the worker, yet each full collection walked all of them (the app, SQLAlchemy, gevent:
    about 120,000 objects), and stopped every request in the worker while it did: 110-270 ms,
    measured in a loaded worker. It also wrote to each object's header, copying pages that
    the workers would otherwise share with the master. A request's own garbage is collected as
    before."""
    gc.freeze()


def child_exit(server, worker):
    """In the master, once a worker has exited: its gauges of things in progress stop counting,
    and one that exits while the master still listens is replaced, so it is a restart."""
    if METRICS_PORT:
        metrics.worker_exited(worker.pid, workers_left=len(server.WORKERS), replaced=bool(server.LISTENERS))


def on_exit(server):
    if METRICS_PORT:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
