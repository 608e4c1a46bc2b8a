"""Every error is JSON of one shape: {"error": {"code", "message", "details"}}."""

from __future__ import annotations

import logging

from flask import Flask, current_app, jsonify, request
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError as RedisOutOfMemoryError
from redis.exceptions import ReadOnlyError as RedisReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.exceptions import HTTPException, InternalServerError, UnsupportedMediaType

from . import metrics

log = logging.getLogger(__name__)

# Stable, machine-readable codes; clients switch on these, not on the message.
CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "too_many_requests",
    500: "internal_error",
    503: "service_unavailable",
}
# Our wording where Werkzeug's default speaks of browsers or is vague.
MESSAGES = {
    400: "The request is malformed.",
    422: "The request failed validation; see details.",
}
# The dependency is down, saturated or full (Redis under `noeviction`; a replica that a
# failover has not promoted yet): worth retrying, not worth a traceback per request.
UNAVAILABLE = (OperationalError, PoolTimeoutError, RedisConnectionError, RedisTimeoutError, RedisOutOfMemoryError,
               RedisReadOnlyError)
WRITE_METHODS = ("POST", "PUT", "PATCH")


def error_response(status: int, message: str, details: dict | None = None, headers=None):
    body = {"error": {"code": CODES.get(status, "error"), "message": message, "details": details or {}}}
    return jsonify(body), status, headers or {}


def handle_http_exception(error: HTTPException):
    data = getattr(error, "data", None) or {}
    messages = data.get("messages", {})
    details = flatten_validation_messages(messages)
    # webargs reports a body that is not JSON as {"json": ["Invalid JSON body."]}
    body_problems = [text for problems in messages.values() if isinstance(problems, list) for text in problems]
    message = (data.get("message") or (body_problems and body_problems[0])
               or MESSAGES.get(error.code) or error.description or error.name)
    headers = {k: v for k, v in error.get_headers() if k.lower() not in ("content-type", "content-length")}
    return error_response(error.code or 500, message, details, headers)


def flatten_validation_messages(messages: dict) -> dict:
    """webargs groups field errors by location ({"json": {"email": [...]}}); clients want fields."""
    details: dict = {}
    for fields in messages.values():
        if isinstance(fields, dict):
            details.update(fields)
    return details


def handle_unavailable(error: Exception):
    # qualified: sqlalchemy.exc.TimeoutError (no pooled connection in time) and
    # redis.exceptions.TimeoutError call for different fixes
    cause = f"{type(error).__module__}.{type(error).__qualname__}"
    log.warning("dependency unavailable: %s", cause)
    metrics.count_unavailable(cause)
    retry_after = str(current_app.config["RETRY_AFTER_SECONDS"])
    return error_response(503, "A backing service is unavailable; retry shortly.", headers={"Retry-After": retry_after})


def handle_unexpected(error: InternalServerError):
    """Errors no handler claimed, including ones raised while opening the session."""
    original = error.original_exception or error
    if is_unavailable(original):
        return handle_unavailable(original)
    log.error("unhandled error", exc_info=original)
    return error_response(500, "Internal server error.")


def is_unavailable(error: BaseException | None) -> bool:
    """A dependency that is down or saturated: answered 503, not a bug to report."""
    return isinstance(error, UNAVAILABLE) or (isinstance(error, DBAPIError) and error.connection_invalidated)


def require_json_body() -> None:
    """A write with a body must declare it as JSON; anything else is a 415, not a parse guess."""
    has_body = request.content_length or request.headers.get("Transfer-Encoding")
    if request.method in WRITE_METHODS and has_body and not request.is_json:
        raise UnsupportedMediaType("Send the request body as application/json.")


def quiet_about_unavailable(app: Flask) -> None:
    """An error raised after the view (saving the session to a Redis that just went away)
    reaches Flask's handle_exception, which logs a traceback at ERROR before handle_unexpected
    answers 503 with its one warning line. The traceback says nothing the warning does not."""
    log_exception = app.log_exception

    def log_unless_unavailable(exc_info) -> None:
        if not is_unavailable(exc_info[1]):
            log_exception(exc_info)

    app.log_exception = log_unless_unavailable


def init_app(app: Flask) -> None:
    quiet_about_unavailable(app)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(InternalServerError, handle_unexpected)
    for error_class in UNAVAILABLE:
        app.register_error_handler(error_class, handle_unavailable)
