"""Password hashing off the event loop, a bounded number at a time per worker.

A scrypt hash costs about 70 ms of CPU. On a gevent worker's loop each one stalls every other
request in that worker, so a login flood starves /health and everything else. hashlib's scrypt
releases the GIL: here it runs on a native thread of a small pool while the loop keeps serving,
at most PASSWORD_HASH_CONCURRENCY at once per worker, on threads with a lower CPU priority so
that request handling wins the core. A request that cannot get a slot within
PASSWORD_HASH_QUEUE_SECONDS gets a 503 with Retry-After instead of queueing without bound.
"""

from __future__ import annotations

import os
import threading

from flask import Flask, current_app
from werkzeug.exceptions import ServiceUnavailable
from werkzeug.security import check_password_hash, generate_password_hash

# Hashing threads yield to request handling (nice 0 is the default; 19 the lowest priority).
HASHING_NICENESS = 10


class PasswordHasher:
    def __init__(self, concurrency: int, queue_seconds: float):
        self.slots = threading.BoundedSemaphore(concurrency)
        self.queue_seconds = queue_seconds
        self.pool = _native_thread_pool(concurrency)

    def hash(self, password: str) -> str:
        return self._run(generate_password_hash, password)

    def verify(self, password_hash: str, password: str) -> bool:
        return self._run(check_password_hash, password_hash, password)

    def _run(self, function, *args):
        if not self.slots.acquire(timeout=self.queue_seconds):
            raise ServiceUnavailable("Too many logins at once; retry shortly.", retry_after=1)
        try:
            if self.pool is None:
                return function(*args)
            return self.pool.apply(_at_low_priority, (function, *args))
        finally:
            self.slots.release()


def _at_low_priority(function, *args):
    # Linux keeps the nice value per thread; a pool thread keeps it for the next hash too.
    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASHING_NICENESS)
    return function(*args)


def _native_thread_pool(size: int):
    """gevent's pool of real OS threads when the worker is a gevent one; None otherwise (a sync
    worker or a CLI command has no loop to protect, so it hashes in the calling thread)."""
    from gevent import monkey

    if not monkey.is_module_patched("threading"):
        return None
    from gevent.threadpool import ThreadPool

    return ThreadPool(size)


def hasher() -> PasswordHasher:
    return current_app.extensions["password_hasher"]


def init_app(app: Flask) -> None:
    app.extensions["password_hasher"] = PasswordHasher(app.config["PASSWORD_HASH_CONCURRENCY"],
                                                       app.config["PASSWORD_HASH_QUEUE_SECONDS"])
