"""A real sentry-sdk client delivers unhandled errors to a Sentry stand-in on loopback, in-process
and from the production launcher's gevent workers, and sends no credential or user data."""

import http.client
import json

import pytest
import sentry_sdk
from redis.exceptions import ConnectionError as RedisConnectionError

from app import create_app
from harness.sentry import SentryIngest
from harness.wait import wait_for


@pytest.fixture
def sentry_ingest():
    ingest = SentryIngest().start()
    yield ingest
    ingest.close()
    sentry_sdk.init()  # back to a disabled client for the rest of the suite


def test_unhandled_error_reaches_sentry_with_environment_and_release(app_env, sentry_ingest):
    app = create_app({**app_env, "SENTRY_DSN": sentry_ingest.dsn, "SENTRY_ENVIRONMENT": "staging",
                      "APP_RELEASE": "3f2c1ab"})

    @app.get("/_test/error")
    def fail():
        raise RuntimeError("deliberate failure for Sentry")

    private = {"Cookie": "session=private", "Authorization": "Bearer t0ken", "X-Request-ID": "trace-1"}
    response = app.test_client().get("/_test/error", headers=private)
    sentry_sdk.flush(timeout=10)

    assert response.status_code == 500
    (received,) = sentry_ingest.events
    event = received["event"]
    assert received["path"] == "/api/42/envelope/"
    assert event["environment"] == "staging"
    assert event["release"] == "3f2c1ab"
    assert event["tags"]["request_id"] == "trace-1"
    assert event["exception"]["values"][0]["value"] == "deliberate failure for Sentry"
    request = json.dumps(event["request"])  # (the source context quotes this test, so look here only)
    assert "t0ken" not in request and "private" not in request


def test_an_outage_answered_503_is_not_reported(app_env, sentry_ingest):
    """Raised after the view (a session save to a Redis that just went away), it reaches Flask's
    handle_exception, which reports to Sentry; an outage is for the alerts, not a bug."""
    app = create_app({**app_env, "SENTRY_DSN": sentry_ingest.dsn})

    @app.get("/_test/error")
    def fail():
        raise RuntimeError("deliberate failure for Sentry")

    @app.after_request
    def lose_redis(response):
        if response.status_code == 200:
            raise RedisConnectionError("Redis went away")
        return response

    client = app.test_client()
    assert client.get("/health/ready").status_code == 503
    assert client.get("/_test/error").status_code == 500  # sent, and flushed after the 503's
    sentry_sdk.flush(timeout=10)

    assert [e["event"]["exception"]["values"][0]["type"] for e in sentry_ingest.events] == ["RuntimeError"]


def test_sentry_sample_rate_zero_sends_no_error(app_env, sentry_ingest):
    app = create_app({**app_env, "SENTRY_DSN": sentry_ingest.dsn, "SENTRY_SAMPLE_RATE": "0"})

    @app.get("/_test/error")
    def fail():
        raise RuntimeError("deliberate failure for Sentry")

    assert app.test_client().get("/_test/error").status_code == 500
    sentry_sdk.flush(timeout=10)

    assert sentry_sdk.get_client().options["sample_rate"] == 0
    assert sentry_ingest.events == []


def test_without_a_dsn_the_app_leaves_sentry_alone(app_env, sentry_ingest):
    """A client set up before the app (by a test here, by another library in real life) is not
    replaced by a disabled one: without SENTRY_DSN the factory does not call sentry_sdk.init."""
    sentry_sdk.init(dsn=sentry_ingest.dsn)

    create_app(app_env)

    assert sentry_sdk.get_client().dsn == sentry_ingest.dsn


def request(port: int, method: str, path: str, body: dict | None = None, headers: dict | None = None):
    """One request on a fresh connection: (status, headers, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=json.dumps(body) if body is not None else None,
                           headers={"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


@pytest.mark.slow
def test_gunicorn_workers_report_each_error_once_and_no_credential(start_gunicorn, app_env, sentry_ingest):
    """The production launcher (gevent, preload, 2 workers) after a login: every unhandled error
    is one event with its release, environment and request id, and no event holds the session
    id (or anything that replays it), the bearer token, the password, the email or the
    Idempotency-Key. Redis keys, SQL parameters and access lines are where they used to leak."""
    server = start_gunicorn({**app_env, "SENTRY_DSN": sentry_ingest.dsn, "SENTRY_ENVIRONMENT": "staging",
                             "APP_RELEASE": "rel-42", "WEB_CONCURRENCY": "2", "LOG_LEVEL": "INFO"},
                            app_module="tests.support.testing_wsgi:app")
    email, password = "ada.lovelace@example.com", "correct horse battery staple"
    assert request(server.port, "POST", "/api/auth/register", {"email": email, "password": password})[0] == 201
    status, headers, _ = request(server.port, "POST", "/api/auth/login", {"email": email, "password": password})
    assert status == 200
    session_id = headers["Set-Cookie"].split(";", 1)[0].removeprefix("session=")
    token, idempotency_key = "t0ken-3c0a9e5b7d", "idem-5f1d8c2e-9b47"
    private = {"Cookie": f"session={session_id}", "Authorization": f"Bearer {token}",
               "Idempotency-Key": idempotency_key}

    request_ids = set()
    for number, where in enumerate(["view", "sql", "view", "sql"]):
        status, headers, _ = request(server.port, "POST", f"/_test/error-with-user-data?in={where}", {},
                                     {**private, "X-Request-ID": f"error-{number}"})
        assert status == 500
        request_ids.add(headers["X-Request-ID"])
    assert request(server.port, "GET", "/api/nope", headers=private)[0] == 404
    assert request(server.port, "POST", "/api/auth/register", {"email": "not-an-email"}, private)[0] == 422
    wait_for(lambda: len(sentry_ingest.events) >= len(request_ids), 20, "an event for each error")
    server.stop()  # each worker flushes its queue as it exits: anything more would be here now

    for received in sentry_ingest.events:
        for secret in (session_id, token, password, email, idempotency_key):
            assert secret not in received["raw"], f"{secret!r} sent to Sentry"
    events = [received["event"] for received in sentry_ingest.events]
    assert sorted(event["tags"]["request_id"] for event in events) == sorted(request_ids)
    assert {(event["release"], event["environment"]) for event in events} == {("rel-42", "staging")}
    assert {event["exception"]["values"][-1]["type"] for event in events} == {"RuntimeError", "DataError"}
