"""Rate limits on Flask-Limiter, counted in the app's Redis (in memory, per process, when the
app runs embedded). The limits are declared on their views:
- failed logins, per account and per client address (app/api/auth.py);
- notes created, per user (app/api/notes.py): nginx limits each address, but cannot see the
  user behind a cookie sent from many.

Flask-Limiter checks a limit before its view runs, so a refused login hashes nothing, and
`deduct_when` counts only the answers it selects (a failed login's 401). What this module adds:
- The storage is the app's own Redis connection pool (app/datastores.py), so the limiter waits
  on a frozen Redis as long as sessions do (REDIS_TIMEOUT, no retry after a timeout), and its
  errors answer 503 like theirs (RATELIMIT_SWALLOW_ERRORS stays off).
- The 429 is the app's JSON error with Retry-After. Flask-Limiter sets Retry-After only with
  RATELIMIT_HEADERS_ENABLED, which reads each limit's window back (two more Redis round trips)
  on every limited request, refused or not; here the window is read only for a refusal.
- forget(): Flask-Limiter has no call to clear one key's count; its strategy's clear() does it.
- No check before every request. Flask-Limiter's before_request hook looks for default,
  application and blueprint limits, which the app has none of; finding nothing took 94 us of CPU
  per request here, near a tenth of an authenticated read's.
"""

from __future__ import annotations

import time

from flask import Flask
from flask_limiter import RateLimitExceeded

from .errors import handle_http_exception
from .extensions import limiter


def forget(key: str) -> None:
    """Clear the counts this request's limits keep under `key`."""
    for counted in limiter.current_limits:
        if key in counted.request_args:
            limiter.limiter.clear(counted.limit, *counted.request_args)


def too_many_requests(error: RateLimitExceeded):
    """The app's 429, with Retry-After: the seconds until the refusing limit's window ends."""
    refused = limiter.current_limit
    error.retry_after = max(1, int(refused.reset_at - time.time()))
    return handle_http_exception(error)


def init_app(app: Flask) -> None:
    redis = app.extensions["redis"]
    app.config["RATELIMIT_STORAGE_URI"] = app.config["REDIS_URL"] if redis is not None else "memory://"
    if redis is not None:
        app.config["RATELIMIT_STORAGE_OPTIONS"] = {"connection_pool": redis.connection_pool}
    limiter.init_app(app)
    # the limits are on views, checked by their decorators: this hook would look for others
    app.before_request_funcs[None].remove(limiter._check_request_limit)
    app.register_error_handler(RateLimitExceeded, too_many_requests)
