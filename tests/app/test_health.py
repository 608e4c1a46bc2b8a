"""Liveness and readiness (app/health.py): /health does no I/O, /health/ready names what fails
without secrets, and polls within the TTL share one probe."""

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import event, text
from werkzeug.test import Client

from app import create_app
from app.extensions import db
from app.health import LivenessAnswer
from harness.process import free_port


def test_liveness_does_no_io(postgres_server):
    """Both backing services are unreachable, and a session cookie is sent: still 200."""
    app = create_app({
        "APP_ENV": "testing",
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/none",
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
    })
    client = app.test_client()
    client.set_cookie("session", "a" * 43)  # well formed: any other path would read the store

    response = client.get("/health")

    assert response.status_code == 200
    assert response.json == {"status": "pass"}
    assert response.mimetype == "application/health+json"


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_the_liveness_answer_is_the_views(app, method):
    """GET and HEAD /health are answered before Flask; what they send must be what the view
    sends, header for header and byte for byte."""
    layer = app.wsgi_app
    while not isinstance(layer, LivenessAnswer):
        layer = layer.wsgi_app
    early = Client(layer).open("/health", method=method, headers={"Cookie": "session=" + "a" * 43})
    flask = Client(layer.wsgi_app).open("/health", method=method, headers={"Cookie": "session=" + "a" * 43})

    assert early.status == flask.status == "200 OK"
    assert sorted(early.headers.items()) == sorted(flask.headers.items())
    assert early.get_data() == flask.get_data()


def test_liveness_by_other_methods_is_flasks_405(client):
    response = client.post("/health")

    assert response.status_code == 405
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}
    assert response.json["error"]["code"]


def test_ready_when_every_dependency_is(client):
    response = client.get("/health/ready")

    assert response.status_code == 200
    assert response.mimetype == "application/health+json"
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json
    assert body["status"] == "pass"
    assert set(body["checks"]) == {"postgres:responseTime", "redis:responseTime", "migrations:head"}
    for (check,) in body["checks"].values():
        assert check["status"] == "pass"
        assert check["componentType"] == "datastore"
        assert check["observedUnit"] == "ms" and isinstance(check["observedValue"], float)
        assert check["time"].endswith("+00:00")


def test_not_ready_names_the_failing_component_without_secrets(redis_url, postgres_server):
    app = create_app({
        "APP_ENV": "testing",
        "DATABASE_URL": f"postgresql://kit:hunter2-secret@127.0.0.1:{free_port()}/kit",
        "REDIS_URL": redis_url,
    })

    response = app.test_client().get("/health/ready")

    assert response.status_code == 503
    body = response.json
    assert body["status"] == "fail"
    assert body["checks"]["postgres:responseTime"][0]["status"] == "fail"
    assert body["checks"]["migrations:head"][0]["output"] == "not checked: the database is unavailable"
    assert body["checks"]["redis:responseTime"][0]["status"] == "pass"
    text_body = response.get_data(as_text=True)
    assert "hunter2" not in text_body and "Traceback" not in text_body


def test_schema_behind_the_code_is_not_ready(postgres_server, redis_url):
    url = postgres_server.create_database("never_migrated")
    try:
        client = create_app({"APP_ENV": "testing", "DATABASE_URL": url, "REDIS_URL": redis_url}).test_client()

        check = client.get("/health/ready").json["checks"]["migrations:head"][0]

        assert check["status"] == "fail"
        assert "flask --app wsgi db upgrade" in check["output"]
    finally:
        postgres_server.drop_database("never_migrated")


def test_schema_ahead_of_the_code_is_a_warning(app, client):
    with app.app_context():
        db.session.execute(text("UPDATE alembic_version SET version_num = 'from_a_newer_release'"))
        db.session.commit()

    response = client.get("/health/ready")

    assert response.status_code == 200
    assert response.json["status"] == "warn"
    assert response.json["checks"]["migrations:head"][0]["status"] == "warn"


@pytest.mark.parametrize("ttl, polls, expected_probes", [("60", 50, 1), ("0", 5, 5)])
def test_polls_within_the_ttl_cost_one_probe(app_env, ttl, polls, expected_probes):
    app = create_app({**app_env, "HEALTH_CACHE_TTL": ttl})
    client = app.test_client()
    database_queries = []
    with app.app_context():
        event.listen(db.engine, "before_cursor_execute",
                     lambda conn, cursor, statement, *args: database_queries.append(statement))

    statuses = {client.get("/health/ready").status_code for _ in range(polls)}

    assert statuses == {200}
    # one statement per probe: no pre-ping, no separate SELECT 1 (the bench counts at the server)
    assert database_queries == ["SELECT version_num FROM alembic_version"] * expected_probes
    assert app.extensions["readiness"].probe_count == expected_probes


def test_concurrent_polls_on_a_cold_cache_share_one_probe(app_env):
    """The first poller probes; the others wait for its result instead of probing too."""
    app = create_app({**app_env, "HEALTH_CACHE_TTL": "60"})

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(lambda _: app.test_client().get("/health/ready").status_code, range(32)))

    assert set(statuses) == {200}
    assert app.extensions["readiness"].probe_count == 1
