"""datastores.fetch_rows: a statement on the driver's cursor fails as it would through
SQLAlchemy's execute, on the real Postgres: wrapped, its parameters hidden, and a connection
that died invalidated, with the pool's older connections, so none is handed out again."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import DBAPIError

from app.datastores import fetch_rows
from app.extensions import db
from harness.wait import wait_for

SECRET = "s3cret-parameter"


def test_rows_come_back_as_the_driver_gives_them(app):
    with app.app_context(), db.engine.connect() as connection:
        rows = fetch_rows(connection, "SELECT %(n)s::int, %(text)s", {"n": 7, "text": "seven"})

    assert rows == [(7, "seven")]


def test_a_failed_statement_is_wrapped_with_its_parameters_hidden(app):
    with app.app_context(), db.engine.connect() as connection:
        with pytest.raises(DBAPIError) as caught:
            fetch_rows(connection, "SELECT 1 / (%(n)s - %(n)s), %(secret)s", {"n": 1, "secret": SECRET})
        assert not caught.value.connection_invalidated
        # the failed statement's transaction was rolled back: the same connection reads on
        assert fetch_rows(connection, "SELECT 1", {}) == [(1,)]

    assert "division by zero" in str(caught.value)
    assert SECRET not in str(caught.value) and "parameters hidden" in str(caught.value)


def backend_pid(connection) -> int:
    return fetch_rows(connection, "SELECT pg_backend_pid()", {})[0][0]


def test_a_connection_the_server_ended_is_invalidated_with_the_pool(app, postgres_server):
    with app.app_context():
        engine = db.engine
        with engine.connect() as older:
            older_pid = backend_pid(older)
            with engine.connect() as connection:
                pid = backend_pid(connection)
                postgres_server.psql(f"SELECT pg_terminate_backend({pid})")
                wait_for(lambda: postgres_server.psql(
                    f"SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}") == "0", 10, "the backend to end")
                with pytest.raises(DBAPIError) as caught:
                    fetch_rows(connection, "SELECT 1", {})
                assert connection.invalidated
        # both back in the pool; the older one, alive, is replaced at its next checkout too
        with engine.connect() as first, engine.connect() as second:
            pids = {backend_pid(first), backend_pid(second)}

    assert caught.value.connection_invalidated
    assert not pids & {older_pid, pid}
