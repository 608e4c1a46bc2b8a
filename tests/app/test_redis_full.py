"""A full Redis, with production's eviction policy (read from docker-compose.prod.yml): the
least recently used expiring keys make way, so new logins keep working; under `noeviction`
the same login would be refused. And every key the app writes expires, or the policy could
not evict it."""

from __future__ import annotations

import re

import pytest
import redis

from app import create_app
from app.extensions import db
from harness import REPO

pytestmark = pytest.mark.slow

PROD_POLICY = re.search(r"maxmemory-policy (\S+?)\\n", (REPO / "docker-compose.prod.yml").read_text()).group(1)
CREDENTIALS = {"password": "correct horse battery"}


@pytest.fixture
def full_redis(redis_url):
    """The session Redis, capped at 4 MB and filled past it with expiring keys, then put back."""
    server = redis.Redis.from_url(redis_url)
    server.config_set("maxmemory-policy", PROD_POLICY)
    server.config_set("maxmemory", "4mb")
    filler = "x" * 1000
    pipe = server.pipeline(transaction=False)
    for n in range(8000):  # ~8 MB of stand-ins for other users' sessions
        pipe.set(f"filler:{n}", filler, ex=3600)
    pipe.execute()
    yield server
    server.config_set("maxmemory", "0")
    server.config_set("maxmemory-policy", "noeviction")
    server.close()


def app_on(database_url, redis_url):
    return create_app({"APP_ENV": "testing", "DATABASE_URL": database_url, "REDIS_URL": redis_url})


def close(app):
    with app.app_context():
        db.engine.dispose()
    app.extensions["redis"].close()


def log_in(app, email: str):
    client = app.test_client()
    assert client.post("/api/auth/register", json={"email": email, **CREDENTIALS}).status_code == 201
    return client, client.post("/api/auth/login", json={"email": email, **CREDENTIALS})


def test_production_policy_evicts_old_keys_and_new_logins_work(database_url, redis_url, full_redis):
    assert PROD_POLICY == "volatile-lru"
    app = app_on(database_url, redis_url)
    try:
        client, login = log_in(app, "late@example.com")

        assert login.status_code == 200
        assert client.get("/api/auth/me").status_code == 200
        info = full_redis.info()
        assert info["evicted_keys"] > 0
        assert info["used_memory"] <= 4 * 2**20 + 512 * 1024  # at the cap, give or take a sample
    finally:
        close(app)


def test_without_eviction_the_same_login_is_refused(database_url, redis_url, full_redis, caplog):
    full_redis.config_set("maxmemory-policy", "noeviction")
    app = app_on(database_url, redis_url)
    try:
        _, login = log_in(app, "late@example.com")

        # what production's policy avoids; a clean 503 all the same, not a 500
        assert login.status_code == 503 and login.headers["Retry-After"]
        assert login.json["error"]["code"] == "service_unavailable"
        assert not [r for r in caplog.records if r.levelname == "ERROR"]
    finally:
        close(app)


def test_every_key_the_app_writes_expires(database_url, redis_url):
    app = app_on(database_url, redis_url)
    server = redis.Redis.from_url(redis_url)
    try:
        client, login = log_in(app, "ada@example.com")
        client.post("/api/auth/login", json={"email": "ada@example.com", "password": "wrong password here"})
        client.post("/api/notes", json={"title": "t"})
        client.get("/api/notes")

        keys = server.keys("*")
        assert keys, "the app wrote nothing to Redis"
        assert {key: server.ttl(key) for key in keys if server.ttl(key) < 0} == {}
    finally:
        server.close()
        close(app)
