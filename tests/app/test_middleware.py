import pytest

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
