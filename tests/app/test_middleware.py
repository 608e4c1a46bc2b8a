"""The WSGI middleware: the request id on every answer, forwarded headers trusted per proxy
hop, and the cork that holds a sized response until its last chunk."""

import socket

import pytest
from flask import Response
from werkzeug.test import EnvironBuilder
from werkzeug.wsgi import FileWrapper

from app import create_app


def test_request_id_is_echoed(client):
    assert client.get("/health", headers={"X-Request-ID": "from-nginx-1"}).headers["X-Request-ID"] == "from-nginx-1"


def test_request_id_is_generated_when_absent_or_malformed(client):
    generated = client.get("/health", headers={"X-Request-ID": 'bad id"'}).headers["X-Request-ID"]

    assert len(generated) == 32


def test_errors_carry_the_request_id_too(client):
    assert client.get("/api/nope", headers={"X-Request-ID": "r-404"}).headers["X-Request-ID"] == "r-404"


@pytest.fixture
def whoami_app(app_env):
    def build(hops):
        app = create_app({**app_env, "PROXY_FIX_HOPS": str(hops)})

        @app.get("/_test/whoami")
        def whoami():
            from flask import request

            return {"remote_addr": request.remote_addr, "scheme": request.scheme, "host": request.host}

        return app.test_client()

    return build


def test_without_proxy_hops_forwarded_headers_are_ignored(whoami_app):
    client = whoami_app(0)

    seen = client.get("/_test/whoami", headers={"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https"}).json

    assert seen["remote_addr"] == "127.0.0.1" and seen["scheme"] == "http"


def test_one_hop_trusts_only_the_last_forwarded_address(whoami_app):
    client = whoami_app(1)

    seen = client.get("/_test/whoami", headers={
        "X-Forwarded-For": "6.6.6.6, 203.0.113.7",  # the client spoofed the first, nginx added the second
        "X-Forwarded-Proto": "https", "X-Forwarded-Host": "example.com",
    }).json

    assert seen == {"remote_addr": "203.0.113.7", "scheme": "https", "host": "example.com"}


class RecordingSocket:
    """Gunicorn's client socket, as far as the middleware touches it: its TCP_CORK settings."""

    def __init__(self, events: list):
        self.events = events

    def setsockopt(self, level, option, value):
        assert (level, option) == (socket.IPPROTO_TCP, socket.TCP_CORK)
        self.events.append("cork" if value else "release")


def gunicorn_environ(path: str, events: list) -> dict:
    """A request's environ as Gunicorn makes it: its socket in it, and its file wrapper."""
    environ = EnvironBuilder(path=path).get_environ()
    environ.update({"gunicorn.socket": RecordingSocket(events), "wsgi.file_wrapper": FileWrapper})
    return environ


def serve_as_gunicorn(app, path: str) -> list:
    """Run one request the way Gunicorn does: every chunk written, then the body closed.
    Returns what happened, in order."""
    events: list = []
    body = app(gunicorn_environ(path, events), lambda status, headers, exc_info=None: events.append("headers"))
    for _chunk in body:
        events.append("chunk")
    if hasattr(body, "close"):
        body.close()
    return events


def test_a_sized_response_is_held_until_its_last_chunk_is_written(app):
    assert serve_as_gunicorn(app, "/health") == ["headers", "cork", "chunk", "release"]  # the liveness answer
    assert serve_as_gunicorn(app, "/api/nope") == ["headers", "cork", "chunk", "release"]  # Flask's


def test_a_streamed_response_or_a_file_is_never_held(app):
    @app.get("/_test/stream")
    def stream():
        return Response(iter([b"one", b"two"]), mimetype="text/plain")

    assert serve_as_gunicorn(app, "/_test/stream") == ["headers", "chunk", "chunk"]
    assert "cork" not in serve_as_gunicorn(app, "/static/robots.txt")  # Gunicorn's sendfile


def test_the_cork_is_released_when_the_client_goes_mid_body(app):
    events: list = []
    body = app(gunicorn_environ("/health", events), lambda status, headers, exc_info=None: None)
    next(iter(body))
    body.close()  # Gunicorn closes the body when a send fails

    assert events == ["cork", "release"]
