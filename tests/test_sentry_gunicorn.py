"""Sentry where it runs: the real Gunicorn under the production launcher (gevent patches first,
the master preloads the app, the worker forks), reporting to a loopback collector that speaks
Sentry's envelope protocol (harness/sentry.py). One worker, so that its events arrive in the
order the errors happened: a later marker error proves that nothing before it is still coming.

One server for the module; the last test stops it, since a worker's final flush is part of
what it checks."""

from __future__ import annotations

import http.client
import json
import time
import uuid

import pytest

from harness.sentry import SentryIngest
from harness.servers import GunicornServer
from harness.wait import wait_for

pytestmark = pytest.mark.slow

# the SDK's default transport_queue_size: events beyond it wait nowhere
QUEUE_SIZE = 100


@pytest.fixture(scope="module")
def ingest():
    server = SentryIngest().start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def database(postgres_server, migrated_template):
    name = f"sentry_{uuid.uuid4().hex[:12]}"
    yield postgres_server.create_database(name, template=migrated_template)
    postgres_server.drop_database(name)


@pytest.fixture(scope="module")
def server(ingest, database, redis_server):
    gunicorn = GunicornServer({"APP_ENV": "testing", "DATABASE_URL": database, "REDIS_URL": redis_server.url,
                               "SENTRY_DSN": ingest.dsn, "SENTRY_ENVIRONMENT": "staging", "APP_RELEASE": "rel-19",
                               "WEB_CONCURRENCY": "1", "LOG_LEVEL": "INFO"},
                              app_module="tests.support.testing_wsgi:app")
    gunicorn.start()
    yield gunicorn
    gunicorn.close()


def request(server, method: str, path: str, body=None, headers: dict | None = None, timeout: float = 10):
    """(status, headers, body) on a fresh connection; a dict body goes as JSON."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        payload = json.dumps(body) if isinstance(body, dict) else body
        connection.request(method, path, body=payload, headers={"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def events_tagged(ingest, prefix: str) -> list[dict]:
    return [received for received in ingest.events
            if received["event"].get("tags", {}).get("request_id", "").startswith(prefix)]


def fail_with_marker(server, ingest, request_id: str) -> None:
    """An error of its own, and its event: everything the worker queued before it has been sent."""
    assert request(server, "GET", "/_test/error", headers={"X-Request-ID": request_id})[0] == 500
    wait_for(lambda: events_tagged(ingest, request_id), 20, f"the event of {request_id}")


def test_the_production_launcher_boots_without_a_patching_warning(server):
    boot = "\n".join(server.log_lines())
    assert "Booting worker" in boot
    assert "MonkeyPatchWarning" not in boot and "monkey" not in boot.lower()
    assert "before gevent" not in boot and "Warning" not in boot


def test_one_unhandled_error_is_one_scrubbed_event_with_release_environment_request_id_and_route(server, ingest):
    before = len(ingest.events)
    secret = "t0ken-8c1f0e"
    status, headers, _ = request(server, "GET", "/_test/error?page=2", body="a body " + secret, headers={
        "Cookie": f"session={secret}", "Authorization": f"Bearer {secret}", "X-Request-ID": "one-error"})
    assert status == 500 and headers["X-Request-ID"] == "one-error"
    fail_with_marker(server, ingest, "marker-after-one-error")

    one, marker = ingest.events[before:]
    event = one["event"]
    assert event["tags"]["request_id"] == "one-error"
    assert (event["release"], event["environment"]) == ("rel-19", "staging")
    assert event["transaction"] == "/_test/error"  # the route template
    assert event["exception"]["values"][-1]["value"] == "deliberate failure for tests"
    assert secret not in one["raw"]
    sent_request = event["request"]
    assert "cookies" not in sent_request and "data" not in sent_request
    assert {name.lower() for name in sent_request.get("headers", {})} & {"cookie", "authorization"} == set()
    assert marker["event"]["tags"]["request_id"] == "marker-after-one-error"


@pytest.fixture
def signed_in(server):
    email = f"ada-{uuid.uuid4().hex[:8]}@example.com"
    credentials = {"email": email, "password": "correct horse battery staple"}
    assert request(server, "POST", "/api/auth/register", credentials)[0] == 201
    status, headers, _ = request(server, "POST", "/api/auth/login", credentials)
    assert status == 200
    return {"Cookie": headers["Set-Cookie"].split(";", 1)[0]}


def test_expected_errors_are_never_sent(server, ingest, redis_server, signed_in):
    """4xx answers, and a 503 for a dependency that is down (counted by the metrics instead)."""
    before = len(ingest.events)
    answers = [
        request(server, "GET", "/api/nope")[0],
        request(server, "GET", "/api/notes")[0],
        request(server, "POST", "/api/auth/register", {"email": "not-an-email"})[0],
        request(server, "DELETE", "/health")[0],
        request(server, "POST", "/api/notes", "not json", {**signed_in, "Content-Type": "text/plain"})[0],
    ]
    redis_server.freeze()  # the session store hangs: REDIS_TIMEOUT, then a 503
    try:
        answers.append(request(server, "GET", "/api/auth/me", headers=signed_in, timeout=5)[0])
    finally:
        redis_server.thaw()
    assert answers == [404, 401, 422, 405, 415, 503]
    fail_with_marker(server, ingest, "marker-after-expected-errors")

    assert [received["event"]["tags"]["request_id"] for received in ingest.events[before:]] == \
        ["marker-after-expected-errors"]


def test_a_black_holed_collector_delays_no_request_and_its_queue_is_bounded(server, ingest):
    """The collector takes the connection and the envelope, and never answers: the worker's one
    sender waits on it (up to the SDK's 30 s), the queue fills, and every later event is dropped,
    never held. Requests are answered as fast as ever meanwhile. Once the collector answers
    again and the worker stops, what arrived plus what the SDK reports dropped is every error."""
    errors = QUEUE_SIZE + 30
    ingest.hold()
    try:
        slowest = 0.0
        for number in range(errors):
            started = time.monotonic()
            assert request(server, "GET", "/_test/error", headers={"X-Request-ID": f"held-{number}"}, timeout=2)[0] \
                == 500
            slowest = max(slowest, time.monotonic() - started)
        started = time.monotonic()
        assert request(server, "GET", "/health", timeout=2)[0] == 200
        slowest = max(slowest, time.monotonic() - started)
    finally:
        ingest.release()
    assert slowest < 1, f"a request took {slowest:.2f} s while the collector hung"

    server.stop()  # the worker's last flush sends what is queued and the SDK's client report

    received = len(events_tagged(ingest, "held-"))
    dropped = sum(report["quantity"] for report in ingest.discarded
                  if report["reason"] == "queue_overflow" and report["category"] == "error")
    assert received <= QUEUE_SIZE + 1  # the queue, and the one the sender was waiting on
    assert received + dropped == errors
