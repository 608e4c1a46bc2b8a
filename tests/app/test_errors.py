"""Every error case answers with its status and the one JSON shape."""

import secrets

import pytest

from app import create_app


def assert_error_shape(response, status, code):
    assert response.status_code == status
    assert response.mimetype == "application/json"
    error = response.json["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["code"] == code
    assert "Traceback" not in response.get_data(as_text=True)


def test_malformed_json_is_400(client):
    response = client.post("/api/auth/register", data='{"email": ', content_type="application/json")

    assert_error_shape(response, 400, "bad_request")


def test_wrong_content_type_is_415(client):
    response = client.post("/api/auth/register", data="email=a@b.co", content_type="application/x-www-form-urlencoded")

    assert_error_shape(response, 415, "unsupported_media_type")


def test_validation_error_is_422_with_field_details(client):
    response = client.post("/api/auth/register", json={"email": "not-an-email", "password": "short", "admin": True})

    assert_error_shape(response, 422, "validation_failed")
    assert set(response.json["error"]["details"]) == {"email", "password", "admin"}


def test_unauthenticated_is_401(client):
    assert_error_shape(client.get("/api/auth/me"), 401, "unauthenticated")


def test_unknown_route_is_404(client):
    assert_error_shape(client.get("/api/nope"), 404, "not_found")


def test_wrong_method_is_405_with_allow(client):
    response = client.delete("/api/auth/me")

    assert_error_shape(response, 405, "method_not_allowed")
    assert "GET" in response.headers["Allow"]


def test_body_over_the_limit_is_413(client, app):
    big = "x" * (app.config["MAX_CONTENT_LENGTH"] + 1)

    response = client.post("/api/notes", data=big, content_type="application/json")

    assert_error_shape(response, 413, "payload_too_large")


def test_unexpected_error_is_500_without_traceback(app, client):
    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internals")

    response = client.get("/boom")

    assert_error_shape(response, 500, "internal_error")
    assert "secret internals" not in response.get_data(as_text=True)


@pytest.fixture
def unreachable_env(postgres_server):
    """Ports with nothing listening: both backing services are down."""
    from harness.process import free_port

    return {
        "APP_ENV": "testing",
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/nothing",
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
    }


def test_database_down_is_503_with_retry_after(unreachable_env, redis_url):
    client = create_app({**unreachable_env, "REDIS_URL": redis_url}).test_client()

    response = client.post("/api/auth/register", json={"email": "ada@example.com", "password": "correct horse battery"})

    assert_error_shape(response, 503, "service_unavailable")
    assert response.headers["Retry-After"] == "5"


def test_redis_down_is_503_with_retry_after(unreachable_env, database_url):
    client = create_app({**unreachable_env, "DATABASE_URL": database_url}).test_client()
    client.set_cookie("session", secrets.token_urlsafe(32))  # a well-formed id: the store is read

    response = client.get("/api/auth/me")

    assert_error_shape(response, 503, "service_unavailable")
    assert "Retry-After" in response.headers
