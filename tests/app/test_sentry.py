"""A real sentry-sdk client delivers an unhandled error to a Sentry stand-in on loopback."""

import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sentry_sdk

from app import create_app


class EnvelopeCollector(BaseHTTPRequestHandler):
    """Accepts what Sentry's ingest endpoint accepts: POST /api/<project>/envelope/."""

    received: list[dict] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        lines = body.decode().splitlines()
        # an envelope: its header line, then item header / payload pairs
        for item_header, payload in zip(lines[1::2], lines[2::2], strict=True):
            if json.loads(item_header)["type"] == "event":
                self.received.append({"path": self.path, "event": json.loads(payload)})
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def sentry_endpoint():
    EnvelopeCollector.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), EnvelopeCollector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://publickey@127.0.0.1:{server.server_port}/42", EnvelopeCollector.received
    server.shutdown()
    server.server_close()
    sentry_sdk.init()  # back to a disabled client for the rest of the suite


def test_unhandled_error_reaches_sentry_with_environment_and_release(app_env, sentry_endpoint):
    dsn, received = sentry_endpoint
    app = create_app({**app_env, "SENTRY_DSN": dsn, "SENTRY_ENVIRONMENT": "staging", "APP_RELEASE": "3f2c1ab"})

    @app.get("/_test/error")
    def fail():
        raise RuntimeError("deliberate failure for Sentry")

    private = {"Cookie": "session=private", "Authorization": "Bearer t0ken"}
    response = app.test_client().get("/_test/error", headers=private)
    sentry_sdk.flush(timeout=10)

    assert response.status_code == 500
    assert len(received) == 1
    event = received[0]["event"]
    assert received[0]["path"] == "/api/42/envelope/"
    assert event["environment"] == "staging"
    assert event["release"] == "3f2c1ab"
    assert event["exception"]["values"][0]["value"] == "deliberate failure for Sentry"
    request = json.dumps(event["request"])  # (the source context quotes this test, so look here only)
    assert "t0ken" not in request and "private" not in request


def test_without_a_dsn_the_app_leaves_sentry_alone(app_env, sentry_endpoint):
    """A client set up before the app (by a test here, by another library in real life) is not
    replaced by a disabled one: without SENTRY_DSN the factory does not call sentry_sdk.init."""
    dsn, _ = sentry_endpoint
    sentry_sdk.init(dsn=dsn)

    create_app(app_env)

    assert sentry_sdk.get_client().dsn == dsn
