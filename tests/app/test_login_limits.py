"""Failed logins are limited per account and per client address, in real Redis."""

import time

import pytest

from app import create_app

PASSWORD = "correct horse battery"


@pytest.fixture
def limited(app_env):
    """An app with small limits; requests can come from any address (REMOTE_ADDR)."""
    app = create_app({**app_env, "LOGIN_FAILURES_PER_ACCOUNT": "3", "LOGIN_FAILURES_PER_ADDRESS": "5",
                      "LOGIN_FAILURE_WINDOW_SECONDS": "60"})
    client = app.test_client()
    for email in ("ada@example.com", "bob@example.com"):
        assert client.post("/api/auth/register", json={"email": email, "password": PASSWORD}).status_code == 201
    yield app
    app.extensions["redis"].close()


def login(app, email="ada@example.com", password="wrong password!", address="203.0.113.1"):
    client = app.test_client()
    return client.post("/api/auth/login", json={"email": email, "password": password},
                       environ_base={"REMOTE_ADDR": address})


def test_an_account_is_limited_whatever_the_address(limited):
    statuses = [login(limited, address=f"203.0.113.{n}").status_code for n in range(1, 4)]

    blocked = login(limited, password=PASSWORD, address="198.51.100.7")

    assert statuses == [401, 401, 401]
    assert blocked.status_code == 429, "the right password must not get through a limited account"
    assert blocked.json["error"]["code"] == "too_many_requests"
    assert 0 < int(blocked.headers["Retry-After"]) <= 60
    assert login(limited, "bob@example.com", PASSWORD).status_code == 200  # other accounts are not


def test_an_address_is_limited_whatever_the_account(limited):
    for n in range(5):
        assert login(limited, f"nobody{n}@example.com").status_code == 401

    assert login(limited, "bob@example.com", PASSWORD).status_code == 429
    assert login(limited, "bob@example.com", PASSWORD, address="203.0.113.99").status_code == 200


def test_a_refused_attempt_hashes_nothing(limited):
    for _ in range(3):
        login(limited)
    hasher = limited.extensions["password_hasher"]
    calls = []
    original = hasher._run
    hasher._run = lambda *args: calls.append(args) or original(*args)

    assert login(limited).status_code == 429
    assert calls == []


def test_a_successful_login_clears_the_account_count(limited):
    login(limited)
    login(limited)

    assert login(limited, password=PASSWORD).status_code == 200
    assert [login(limited, address="203.0.113.2").status_code for _ in range(3)] == [401, 401, 401]


def test_a_frozen_redis_answers_login_with_503_within_its_timeout(limited, redis_server):
    """The limiter reads its counts through the app's Redis pool: REDIS_TIMEOUT bounds the wait,
    once (no retry after a timeout), and the answer is the app's 503."""
    redis_server.freeze()
    try:
        started = time.monotonic()
        response = login(limited, password=PASSWORD)
        took = time.monotonic() - started
    finally:
        redis_server.thaw()

    assert response.status_code == 503 and response.headers["Retry-After"]
    assert response.json["error"]["code"] == "service_unavailable"
    assert took < limited.config["REDIS_TIMEOUT"] + 1.0  # one timeout, plus a loaded machine's slack
