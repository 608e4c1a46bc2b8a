"""Every wait on Postgres is bounded client-side (app/pgwait.py), even when the server is
frozen and its kernel still accepts and acknowledges, and a connection given up on is gone."""

import time

import psycopg2
import pytest

from app import create_app
from app.extensions import db
from harness.servers import migrated_postgres
from harness.wait import wait_for

# bounds on timeouts, never timings: each answer must come well within these
SLACK = 2.0


@pytest.fixture(scope="module")
def own_postgres():
    """A server of this module's own, so freezing it disturbs no other test."""
    with migrated_postgres() as server_and_url:
        yield server_and_url


@pytest.fixture
def logged_in(own_postgres, redis_url):
    server, url = own_postgres
    server.psql("TRUNCATE users CASCADE", "kit")
    app = create_app({"APP_ENV": "testing", "DATABASE_URL": url, "REDIS_URL": redis_url,
                      "DB_REQUEST_TIMEOUT": "1", "DB_CONNECT_TIMEOUT": "2"})
    client = app.test_client()
    credentials = {"email": "ada@example.com", "password": "correct horse battery"}
    assert client.post("/api/auth/register", json=credentials).status_code == 201
    assert client.post("/api/auth/login", json=credentials).status_code == 200
    yield server, app, client
    server.thaw()
    with app.app_context():
        db.engine.dispose()
    app.extensions["redis"].close()


def timed(call):
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def test_a_frozen_server_answers_503_at_the_request_deadline(logged_in):
    server, app, client = logged_in
    assert client.get("/api/notes").status_code == 200  # the pool now holds a connection

    server.freeze()
    response, took = timed(lambda: client.get("/api/notes"))

    assert response.status_code == 503 and response.headers["Retry-After"]
    assert took < 1 + SLACK
    server.thaw()
    assert client.get("/api/notes").status_code == 200, "recovers with no restart"


def test_connecting_to_a_frozen_server_is_bounded_too(logged_in, own_postgres):
    """The empty-pool case: libpq's own connect_timeout is not enforced under a wait callback."""
    server, _, _ = logged_in
    app = create_app({"APP_ENV": "testing", "DATABASE_URL": own_postgres[1], "DB_CONNECT_TIMEOUT": "2",
                      "DB_REQUEST_TIMEOUT": "30"})
    server.freeze()
    try:
        with app.app_context():
            started = time.monotonic()
            with pytest.raises(Exception) as caught:
                db.session.execute(db.text("SELECT 1"))
            took = time.monotonic() - started
    finally:
        server.thaw()

    assert "no answer from Postgres to connecting within 2 s" in str(caught.value)
    assert took < 2 + SLACK


def test_a_write_given_up_on_never_commits(logged_in):
    """The INSERT waits on a lock past the deadline: the client gets a 503 and closes the
    connection, so the transaction dies when the server gets to it; the row never appears."""
    server, app, client = logged_in
    locker = psycopg2.connect(server.database_url("kit"))
    try:
        locker.cursor().execute("LOCK TABLE notes IN ACCESS EXCLUSIVE MODE")
        response, took = timed(lambda: client.post("/api/notes", json={"title": "given up"}))
        # the abandoned backend is 'active' while it waits on the lock: known by its pid only
        abandoned = wait_for(lambda: server.psql("SELECT pid FROM pg_stat_activity WHERE "
                                                 f"{locker.get_backend_pid()} = ANY(pg_blocking_pids(pid))"),
                             10, "the abandoned INSERT waiting on the lock")
    finally:
        locker.close()  # releases the lock: the abandoned INSERT may now run, and must not commit

    assert response.status_code == 503
    assert took < 1 + SLACK
    wait_for(lambda: server.psql(f"SELECT count(*) FROM pg_stat_activity WHERE pid = {int(abandoned)}") == "0",
             10, "the abandoned backend to end")
    assert server.psql("SELECT count(*) FROM notes", "kit") == "0"


def test_a_restarted_server_costs_no_failed_request(logged_in):
    """No pre-ping round trip, yet the connections the restart killed are never handed out:
    their sockets are readable (the server said goodbye), which checkout notices."""
    server, app, client = logged_in
    for _ in range(3):
        assert client.get("/api/notes").status_code == 200

    server.restart()

    assert [client.get("/api/notes").status_code for _ in range(3)] == [200, 200, 200]
