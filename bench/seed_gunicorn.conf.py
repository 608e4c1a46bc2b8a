"""The seed tutorial's Gunicorn configuration, the baseline `make bench` compares ours with.

From the tutorial this kit grew from ("Flask - Deployment", section "Gunicorn Production
Configuration"), as recorded in shared/reference/seed-baseline.md. Kept as the tutorial gives
it: only the bind address comes from the bench (GUNICORN_BIND), as the tutorial reads its own.
Not used by the service itself.
"""

import multiprocessing
import os

bind = os.environ["GUNICORN_BIND"]
workers = int(os.environ.get("GUNICORN_WORKERS", multiprocessing.cpu_count() * 2 + 1))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "sync")
worker_connections = 1000
timeout = 120
keepalive = 5
max_requests = 1000
max_requests_jitter = 50
preload_app = True
graceful_timeout = 30
accesslog = "-"
errorlog = "-"
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(D)s'
loglevel = os.environ.get("LOG_LEVEL", "info")
