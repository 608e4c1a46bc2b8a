"""JSON logs: one object per line on stdout, each carrying the request id of its request."""

from __future__ import annotations

import logging
import logging.config
import re
import sys
import uuid

from flask import Flask, has_request_context, request

from .jsonlog import json_formatter

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_ENVIRON_KEY = "app.request_id"
# Bounded and free of quotes, spaces and control characters, so a client cannot forge log records.
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,128}")
def request_id_from(header_value: str | None) -> str:
    """The client's id when it is well formed, a fresh one otherwise."""
    if header_value and REQUEST_ID_PATTERN.fullmatch(header_value):
        return header_value
    return uuid.uuid4().hex


class RequestContextFilter(logging.Filter):
    """Adds request_id, method, path and the client address to records logged during a request."""

    def filter(self, record: logging.LogRecord) -> bool:
        if has_request_context():
            record.request_id = request.environ.get(REQUEST_ID_ENVIRON_KEY)
            record.method = request.method
            record.path = request.path
            record.remote_addr = request.remote_addr
        return True


def init_app(app: Flask) -> None:
    """Route every logger to one JSON handler on stdout."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(json_formatter())
    handler.addFilter(RequestContextFilter())
    handler.app_json_handler = True
    root = logging.getLogger()
    # replace the handler of an earlier create_app() in this process, and leave others alone
    for old in [h for h in root.handlers if getattr(h, "app_json_handler", False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(app.config["LOG_LEVEL"])
    # Flask's own handler would print the same records a second time, in plain text.
    app.logger.handlers.clear()
    app.logger.propagate = True
