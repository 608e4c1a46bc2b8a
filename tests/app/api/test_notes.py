"""The notes API (app/api/notes.py): create, read, update and delete; pagination; another
user's note as not found; rejected writes that leave no row; the per-user note limit."""

import time

import marshmallow
import pytest

from app import create_app
from app.extensions import db
from app.models import Note


@pytest.fixture
def logged_in(auth):
    auth.register_and_login()
    return auth.client


def create(client, title="groceries", body="eggs"):
    response = client.post("/api/notes", json={"title": title, "body": body})
    assert response.status_code == 201, response.json
    return response.json


def test_create_read_update_delete(logged_in):
    note = create(logged_in)

    assert logged_in.get(f"/api/notes/{note['id']}").json["title"] == "groceries"
    updated = logged_in.patch(f"/api/notes/{note['id']}", json={"body": "milk"})
    assert updated.status_code == 200
    assert updated.json["body"] == "milk" and updated.json["title"] == "groceries"
    assert logged_in.delete(f"/api/notes/{note['id']}").status_code == 204
    assert logged_in.get(f"/api/notes/{note['id']}").status_code == 404


def test_list_is_paginated_newest_first(logged_in):
    for index in range(5):
        create(logged_in, title=f"note {index}")

    first = logged_in.get("/api/notes?per_page=2").json
    last = logged_in.get("/api/notes?per_page=2&page=3").json
    past_the_end = logged_in.get("/api/notes?per_page=2&page=4").json

    assert first["has_more"] is True and first["page"] == 1 and first["per_page"] == 2
    assert [note["title"] for note in first["items"]] == ["note 4", "note 3"]
    assert [note["title"] for note in last["items"]] == ["note 0"] and last["has_more"] is False
    assert past_the_end["items"] == [] and past_the_end["has_more"] is False


def test_a_full_last_page_has_no_more(logged_in):
    for index in range(4):
        create(logged_in, title=f"note {index}")

    assert logged_in.get("/api/notes?per_page=2&page=2").json["has_more"] is False


def test_requests_build_no_argument_schema(logged_in, monkeypatch):
    """The blueprint hands webargs schema instances, built at import; a class would be built
    again on every request (app/api/parsing.py)."""
    built = []
    original = marshmallow.Schema.__init__
    monkeypatch.setattr(marshmallow.Schema, "__init__",
                        lambda self, *args, **kwargs: built.append(type(self)) or original(self, *args, **kwargs))

    assert logged_in.get("/api/notes?per_page=2").status_code == 200
    assert logged_in.get("/api/notes?per_page=abc").status_code == 422
    assert logged_in.post("/api/notes", json={"title": "t", "body": "b"}).status_code == 201

    assert built == []


@pytest.mark.parametrize("query", ["page=0", "per_page=101", "per_page=abc"])
def test_bad_pagination_is_a_validation_error(logged_in, query):
    response = logged_in.get(f"/api/notes?{query}")

    assert response.status_code == 422
    assert response.json["error"]["details"]


def test_someone_elses_note_is_not_found(app, auth):
    auth.register_and_login("ada@example.com")
    note = create(auth.client)
    other = app.test_client()
    other.post("/api/auth/register", json={"email": "eve@example.com", "password": "correct horse battery"})
    other.post("/api/auth/login", json={"email": "eve@example.com", "password": "correct horse battery"})

    for method in ("get", "patch", "delete"):
        response = getattr(other, method)(f"/api/notes/{note['id']}", json={"title": "mine now"})
        assert response.status_code == 404
        assert response.json["error"]["code"] == "not_found"
    assert other.get("/api/notes").json["items"] == []


def test_notes_need_a_login(client):
    response = client.get("/api/notes")

    assert response.status_code == 401
    assert response.json["error"]["code"] == "unauthenticated"


def test_rejected_write_leaves_no_row(app, logged_in):
    response = logged_in.post("/api/notes", json={"title": "x" * 201, "body": "too long a title"})

    assert response.status_code == 422
    assert "title" in response.json["error"]["details"]
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(Note)) == 0


@pytest.mark.parametrize("method", ["get", "patch", "delete"])
def test_an_id_beyond_the_column_range_is_not_found(logged_in, method):
    response = getattr(logged_in, method)(f"/api/notes/{2**63}", json={})

    assert response.status_code == 404


def test_a_listed_note_is_the_note_itself(logged_in):
    """The list serializes notes by hand (schemas.note_json); it must match NoteSchema's dump."""
    create(logged_in, title="ünïcode ✓", body="line\nbreak")
    logged_in.patch(f"/api/notes/{create(logged_in, title='edited')['id']}", json={"body": "later"})

    listed = logged_in.get("/api/notes").json["items"]

    assert listed == [logged_in.get(f"/api/notes/{note['id']}").json for note in listed]
    assert len(listed) == 2


@pytest.fixture
def three_notes_a_minute(app_env):
    """An app that lets each user create three notes a minute."""
    app = create_app({**app_env, "NOTES_PER_USER_PER_MINUTE": "3"})
    yield app
    with app.app_context():
        db.engine.dispose()
    app.extensions["redis"].close()


def logged_in_as(app, email: str):
    client = app.test_client()
    credentials = {"email": email, "password": "correct horse battery"}
    assert client.post("/api/auth/register", json=credentials).status_code == 201
    assert client.post("/api/auth/login", json=credentials).status_code == 200
    return client


def write(client, address: str, title: str = "t"):
    return client.post("/api/notes", json={"title": title}, environ_base={"REMOTE_ADDR": address})


def test_notes_are_limited_per_user_whatever_the_address(three_notes_a_minute):
    ada = logged_in_as(three_notes_a_minute, "ada@example.com")
    bob = logged_in_as(three_notes_a_minute, "bob@example.com")

    written = [write(ada, f"203.0.113.{n}").status_code for n in range(1, 4)]
    refused = write(ada, "198.51.100.7", title="one too many")

    assert written == [201, 201, 201]
    assert refused.status_code == 429
    assert refused.json["error"]["code"] == "too_many_requests" and refused.json["error"]["message"]
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    assert write(bob, "203.0.113.1").status_code == 201, "another user from the same address is not limited"
    with three_notes_a_minute.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(Note).where(Note.title == "one too many")) == 0


def test_the_note_limit_leaves_reads_and_anonymous_writes_alone(three_notes_a_minute):
    ada = logged_in_as(three_notes_a_minute, "ada@example.com")
    for _ in range(3):
        write(ada, "203.0.113.1")

    assert ada.get("/api/notes").status_code == 200
    assert three_notes_a_minute.test_client().post("/api/notes", json={"title": "t"}).status_code == 401


def test_a_frozen_redis_answers_a_write_with_503_within_its_timeout(three_notes_a_minute, redis_server):
    """The session read meets the frozen Redis first, and the limit, which needs the session,
    fails with it: one REDIS_TIMEOUT, then the app's 503."""
    ada = logged_in_as(three_notes_a_minute, "ada@example.com")
    redis_server.freeze()
    try:
        started = time.monotonic()
        response = write(ada, "203.0.113.1")
        took = time.monotonic() - started
    finally:
        redis_server.thaw()

    assert response.status_code == 503 and response.headers["Retry-After"]
    assert response.json["error"]["code"] == "service_unavailable"
    assert took < three_notes_a_minute.config["REDIS_TIMEOUT"] + 1.0  # one timeout, plus slack
    with three_notes_a_minute.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(Note)) == 0
