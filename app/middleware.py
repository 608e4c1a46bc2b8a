"""WSGI middleware: the real client address behind the proxy, and a request id on every request."""

from __future__ import annotations

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from .logs import REQUEST_ID_ENVIRON_KEY, REQUEST_ID_HEADER, request_id_from


class RequestIdMiddleware:
    """Takes X-Request-ID from the client (or nginx) when well formed, otherwise makes one,
    and echoes it in the response. It runs outside Flask so that even errors raised before
    the first hook (an unreachable session store, say) carry the id."""

    def __init__(self, wsgi_app):
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        request_id = request_id_from(environ.get("HTTP_X_REQUEST_ID"))
        environ[REQUEST_ID_ENVIRON_KEY] = request_id

        def start_response_with_id(status, headers, exc_info=None):
            headers = [(name, value) for name, value in headers if name.lower() != "x-request-id"]
            headers.append((REQUEST_ID_HEADER, request_id))
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, start_response_with_id)


def init_app(app: Flask) -> None:
    app.wsgi_app = RequestIdMiddleware(app.wsgi_app)
    hops = app.config["PROXY_FIX_HOPS"]
    if hops:
        # Trust exactly as many X-Forwarded-* values as there are proxies; one more is a spoofing hole.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops)
