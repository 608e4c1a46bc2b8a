"""What each request costs Postgres, counted in the server's own statement log: a read is one
statement (no BEGIN, no ROLLBACK, no COUNT, no user lookup); a write keeps its transaction."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

from app import create_app
from app.extensions import db
from harness.wait import log_size

STATEMENT = re.compile(r"\[(\d+)\] LOG:  statement: (.*)")


@pytest.fixture
def logged_app(postgres_server, database_url, redis_url):
    name = urlsplit(database_url).path.lstrip("/")
    # applies to the app's connections, which all start after this
    postgres_server.psql(f'ALTER DATABASE "{name}" SET log_statement = \'all\'')
    app = create_app({"APP_ENV": "testing", "DATABASE_URL": database_url, "REDIS_URL": redis_url})
    yield app
    with app.app_context():
        db.engine.dispose()
    app.extensions["redis"].close()


def statements_of(postgres_server, request) -> list[str]:
    """The statements Postgres received while `request()` ran."""
    start = log_size(postgres_server.log)
    request()
    with open(postgres_server.log, encoding="utf-8", errors="replace") as log:
        log.seek(start)
        return [match.group(2) for match in STATEMENT.finditer(log.read())]


def test_a_read_is_one_statement_and_a_write_one_transaction(postgres_server, logged_app):
    client = logged_app.test_client()
    credentials = {"email": "ada@example.com", "password": "correct horse battery"}
    assert client.post("/api/auth/register", json=credentials).status_code == 201
    assert client.post("/api/auth/login", json=credentials).status_code == 200
    created = client.post("/api/notes", json={"title": "first"})
    assert created.status_code == 201

    listed = statements_of(postgres_server, lambda: client.get("/api/notes"))
    one = statements_of(postgres_server, lambda: client.get(f"/api/notes/{created.json['id']}"))
    written = statements_of(postgres_server, lambda: client.post("/api/notes", json={"title": "second"}))
    # after the GETs, a write on a pooled connection is transactional again
    edited = statements_of(postgres_server, lambda: client.patch(f"/api/notes/{created.json['id']}",
                                                                json={"title": "edited"}))

    assert len(listed) == 1 and listed[0].startswith("SELECT notes.id, notes.title"), listed
    assert len(one) == 1 and one[0].startswith("SELECT notes."), one
    # the user, the note, and no second transaction to read the note back for the answer
    assert [s.split()[0] for s in written] == ["BEGIN", "SELECT", "INSERT", "COMMIT"], written
    assert edited[0] == "BEGIN" and edited[-1] == "COMMIT" and any(s.startswith("UPDATE") for s in edited), edited
    assert client.get("/api/notes").json["items"][0]["title"] == "second"
