"""Error tracking with Sentry, on only when SENTRY_DSN is set.

What leaves the service is a bug's traceback, the route and the request id: never a credential or
a user's data. Each auto-enabled integration was checked against sentry-sdk 2.75 for what it adds:
- Redis: every command's key goes into breadcrumbs, span names and tags, whatever the options
  (integrations/redis/utils.py). Keys hold client addresses (login limits) and name sessions, so
  the integration is off. Redis failures still reach the logs, as 503s.
- SQLAlchemy: the statement, with its parameters unless database_query_data is False (an explicit
  data_collection defaults it to True): emails, password hashes, idempotency keys. Off below;
  the engine also hides parameters from exception messages (app/datastores.py).
- Logging: INFO lines become breadcrumbs, and ERROR lines events, with their extra fields.
  Gunicorn's access lines (the client's address and user agent) are ignored; the app's own
  lines name no user data, and their client address is dropped (drop_client_address).
- Stdlib (http.client, subprocess), threading, argv: nothing from a request; a request makes no
  outbound HTTP calls.

Expected errors are never sent: a 4xx is an answer, not an exception Flask reports, and a 503 for
an unavailable dependency is dropped by before_send (the metric http_dependency_unavailable_total
counts it, app/metrics.py). Sending never holds up a request: an event joins the SDK's bounded
queue (transport_queue_size, 100 by default) and a background greenlet posts it, waiting at most
30 s for an answer; while the collector does not answer, the queue fills and further events are
dropped, and the SDK reports how many to Sentry once it answers again (client reports,
"queue_overflow"). tests/test_sentry_gunicorn.py proves both under the production launcher.
"""

from __future__ import annotations

from flask import Flask, has_request_context, request

from .errors import is_unavailable
from .logs import REQUEST_ID_ENVIRON_KEY

# Header names holding a client's address, scrubbed on top of the SDK's own denylist (which
# already covers Cookie, Authorization and any *-Key, Idempotency-Key included). These are the
# terms the SDK itself scrubs when send_default_pii is off.
CLIENT_ADDRESS_HEADERS = ["forwarded", "-ip", "remote-", "via", "-user"]
CREDENTIAL_HEADERS = frozenset({"cookie", "authorization", "proxy-authorization"})


def init_app(app: Flask) -> None:
    """Called from the factory, so under Gunicorn it runs in the worker after gevent has patched."""
    dsn = app.config["SENTRY_DSN"]
    if not dsn:
        return
    # only here: the SDK's import adds ~0.1 s to a worker's boot
    import sentry_sdk
    from sentry_sdk.integrations.flask import FlaskIntegration
    from sentry_sdk.integrations.logging import ignore_logger
    from sentry_sdk.integrations.redis import RedisIntegration

    ignore_logger("gunicorn.access")
    sentry_sdk.init(
        dsn=dsn,
        environment=app.config["SENTRY_ENVIRONMENT"],
        release=app.config["APP_RELEASE"],
        sample_rate=app.config["SENTRY_SAMPLE_RATE"],
        # performance tracing costs quota and latency; opt in per deployment
        traces_sample_rate=app.config["SENTRY_TRACES_SAMPLE_RATE"],
        # The transaction is the route template (/api/notes/<int:note_id>), as in the metrics'
        # route label, not the view function's name.
        integrations=[FlaskIntegration(transaction_style="url")],
        disabled_integrations=[RedisIntegration()],
        # The successor of send_default_pii=False (deprecated in sentry-sdk 2.7x): no user
        # identity, cookies, request bodies, query parameters or local variables leave the
        # service; headers and query strings only after the denylist has scrubbed them.
        # https://docs.sentry.io/platforms/python/configuration/options/#data_collection
        data_collection={
            "user_info": False,
            "cookies": {"mode": "off"},
            "http_bodies": [],
            "http_headers": {"request": {"mode": "denylist", "terms": CLIENT_ADDRESS_HEADERS}},
            "url_query_params": {"mode": "denylist"},
            "stack_frame_variables": False,
            "database_query_data": False,
            "queues": False,
        },
        before_send=before_send,
        before_breadcrumb=before_breadcrumb,
    )


def before_send(event: dict, hint: dict) -> dict | None:
    """Tag the event with the request id that the response and the logs carry; drop it when a
    dependency is down. An outage is answered 503 and logged once: it is for the alerts, not a
    bug, and one event per request would flood Sentry. Flask reports it when it is raised after
    the view (a session save to a Redis that just went away)."""
    exc_info = hint.get("exc_info")
    if exc_info and is_unavailable(exc_info[1]):
        return None
    if has_request_context():
        event.setdefault("tags", {})["request_id"] = request.environ.get(REQUEST_ID_ENVIRON_KEY)
    drop_client_address(event.get("extra"))
    drop_credential_headers(event.get("request"))
    return event


def before_breadcrumb(crumb: dict, hint: dict) -> dict:
    drop_client_address(crumb.get("data"))
    return crumb


def drop_credential_headers(sent_request: dict | None) -> None:
    """The SDK sends a scrubbed header with its name and "[Filtered]"; these go altogether."""
    headers = (sent_request or {}).get("headers")
    if headers:
        for name in [name for name in headers if name.lower() in CREDENTIAL_HEADERS]:
            del headers[name]


def drop_client_address(fields: dict | None) -> None:
    """The app's log lines carry the client's address (app/logs.py) for its own logs only."""
    if fields:
        fields.pop("remote_addr", None)
