"""Idempotency-Key on POST /api/notes, against real Postgres: a retry creates nothing."""

import threading
import uuid

import psycopg2
import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.models import IdempotencyKey, Note
from harness.wait import wait_for


@pytest.fixture
def logged_in(auth):
    auth.register_and_login()
    return auth.client


def note_count(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Note))


def post(client, key, payload=None):
    return client.post("/api/notes", json=payload or {"title": "pay rent", "body": "once"},
                       headers={"Idempotency-Key": key})


def test_a_retry_returns_the_first_answer_and_creates_nothing(app, logged_in):
    key = str(uuid.uuid4())

    first = post(logged_in, key)
    retry = post(logged_in, key)

    assert first.status_code == retry.status_code == 201
    assert retry.json == first.json
    assert "Idempotent-Replayed" not in first.headers
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert note_count(app) == 1


def test_another_key_is_another_note(app, logged_in):
    post(logged_in, "key-1")
    post(logged_in, "key-2")

    assert note_count(app) == 2


def test_the_same_key_with_another_body_is_422(app, logged_in):
    post(logged_in, "key-1")

    reused = post(logged_in, "key-1", {"title": "something else"})

    assert reused.status_code == 422
    assert reused.json["error"]["details"] == {"Idempotency-Key": ["Already used with a different request body."]}
    assert note_count(app) == 1


def test_keys_are_per_user(app, auth, client):
    auth.register_and_login("ada@example.com")
    post(client, "shared-key")
    auth.register_and_login("bob@example.com")

    answer = post(client, "shared-key")

    assert answer.status_code == 201 and "Idempotent-Replayed" not in answer.headers
    assert note_count(app) == 2


@pytest.mark.parametrize("key", ["", "has space", "x" * 256, "ключ"])
def test_a_malformed_key_is_400(app, logged_in, key):
    header = key.encode().decode("latin-1")  # as the bytes would arrive on the wire
    response = logged_in.post("/api/notes", json={"title": "t"}, headers={"Idempotency-Key": header})

    assert response.status_code == 400
    assert "Idempotency-Key" in response.json["error"]["message"]
    assert note_count(app) == 0


def test_an_expired_key_is_forgotten(app_env, auth):
    from app import create_app

    app = create_app({**app_env, "IDEMPOTENCY_KEY_TTL_SECONDS": "0"})
    client = app.test_client()
    auth.client = client
    auth.register_and_login()

    post(client, "key-1")
    again = post(client, "key-1")

    assert again.status_code == 201 and "Idempotent-Replayed" not in again.headers
    assert note_count(app) == 2
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(IdempotencyKey)) == 1


def test_concurrent_requests_with_one_key_create_one_note(app, logged_in, postgres_server):
    """Four requests with one key race. A table lock held from outside parks all four at the
    key's insert; once it is released, one commits and the other three, blocked on its primary
    key, replay its answer."""
    cookie = logged_in.get_cookie("session").value
    answers = []

    def send():
        client = app.test_client()
        client.set_cookie("session", cookie)
        answers.append(post(client, "race-key"))

    with app.app_context():
        database = db.engine.url.database
    locker = psycopg2.connect(postgres_server.database_url(database))
    try:
        locker.cursor().execute("LOCK TABLE idempotency_keys IN SHARE ROW EXCLUSIVE MODE")
        threads = [threading.Thread(target=send) for _ in range(4)]
        for thread in threads:
            thread.start()
        wait_for(lambda: lock_waiters(postgres_server, database) >= 4, 10, "four inserts waiting on the lock")
        locker.rollback()
    finally:
        locker.close()
    for thread in threads:
        thread.join(20)

    assert sorted(answer.status_code for answer in answers) == [201] * 4
    assert len({answer.json["id"] for answer in answers}) == 1
    assert sum("Idempotent-Replayed" in answer.headers for answer in answers) == 3
    assert note_count(app) == 1


def lock_waiters(postgres_server, database: str) -> int:
    return int(postgres_server.psql(
        f"SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = '{database}'"))
