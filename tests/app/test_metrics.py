"""app/metrics.py in one process, against real Postgres and Redis: what each answer, the pool,
Redis and readiness add to the metrics, and where the scrape is answered. (Gunicorn's
multiprocess mode, worker restarts and a real Prometheus: tests/test_prometheus.py.)"""

from __future__ import annotations

import socket
import threading
from wsgiref.util import FileWrapper

import pytest
from prometheus_client import REGISTRY
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import text

from app import create_app
from app.extensions import db
from harness.process import free_port

METRICS_PORT = "9464"


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Delta:
    """How much a sample grew while the block ran."""

    def __init__(self, name: str, **labels: str):
        self.name, self.labels = name, labels

    def __enter__(self):
        self.before = value(self.name, **self.labels)
        return self

    def __exit__(self, *exc_info):
        self.grew = value(self.name, **self.labels) - self.before


@pytest.mark.parametrize("method, path, route, status", [
    ("GET", "/api/notes", "/api/notes", "401"),
    ("GET", "/api/notes/42", "/api/notes/<int:note_id>", "401"),  # the template, never the path
    ("GET", "/api/not-a-route/42", "unmatched", "404"),
    ("DELETE", "/api/auth/me", "unmatched", "405"),
    ("GET", "/health", "/health", "200"),  # answered before Flask (app/health.py)
    ("HEAD", "/health", "/health", "200"),
    ("GET", "/health/ready", "/health/ready", "200"),
    ("BREW", "/health", "unmatched", "405"),  # a made-up method makes no series of its own
    ("POST", "/health", "unmatched", "405"),  # past LivenessAnswer, to Flask: a 405 like any other
])
def test_each_answer_counts_once_by_route_template_method_and_status(client, method, path, route, status):
    label_method = method if method != "BREW" else "other"
    with Delta("http_requests_total", route=route, method=label_method, status=status) as counted, \
            Delta("http_request_duration_seconds_count", route=route, method=label_method) as timed, \
            Delta("http_request_duration_seconds_bucket", route=route, method=label_method, le="10.0") as bucketed:
        assert client.open(path, method=method).status_code == int(status)
    assert (counted.grew, timed.grew, bucketed.grew) == (1, 1, 1)
    assert value("http_requests_in_flight") == 0


def test_requests_in_flight_counts_the_ones_being_answered(app):
    seen = []

    @app.get("/_test/in-flight")
    def in_flight():
        seen.append(value("http_requests_in_flight"))
        return {}

    assert app.test_client().get("/_test/in-flight").status_code == 200
    assert seen == [1] and value("http_requests_in_flight") == 0


def test_the_scrape_is_answered_on_the_metrics_port_only(client):
    on_port = {"SERVER_PORT": METRICS_PORT}
    scrape = client.get("/metrics", environ_overrides=on_port)
    assert scrape.status_code == 200 and scrape.mimetype == "text/plain"
    assert b'readiness_check_ok{check="postgres"} 1.0' in scrape.data  # refreshed by the scrape
    assert client.head("/metrics", environ_overrides=on_port).data == b""
    assert client.get("/api/notes", environ_overrides=on_port).status_code == 404  # nothing else there
    assert client.get("/metrics").status_code == 404  # the public port: Flask has no such route


def test_a_host_header_naming_the_metrics_port_on_a_unix_socket_gets_no_scrape(client, tmp_path):
    """There Gunicorn takes SERVER_PORT from the Host header: the socket decides."""
    with socket.socket(socket.AF_UNIX) as unix:
        unix.bind(str(tmp_path / "gunicorn.sock"))
        spoofed = {"SERVER_PORT": METRICS_PORT, "gunicorn.socket": unix, "wsgi.file_wrapper": FileWrapper}
        assert client.get("/metrics", environ_overrides=spoofed).status_code == 404


def test_metrics_port_0_turns_request_metrics_off(app_env):
    app = create_app({**app_env, "METRICS_PORT": "0"})
    with Delta("http_requests_total", route="/api/notes", method="GET", status="401") as answered:
        assert app.test_client().get("/api/notes").status_code == 401

    assert answered.grew == 0, "no request is counted where no scrape could read it"


def test_build_info_names_the_release_and_environment(app_env):
    create_app({**app_env, "APP_RELEASE": "3f2c1ab", "SENTRY_ENVIRONMENT": "staging"})
    assert value("app_build_info", release="3f2c1ab", environment="staging") == 1


def test_a_dependency_503_counts_its_cause(app):
    @app.get("/_test/redis-down")
    def redis_down():
        raise RedisConnectionError("Redis went away")

    with Delta("http_dependency_unavailable_total", cause="redis.exceptions.ConnectionError") as counted:
        assert app.test_client().get("/_test/redis-down").status_code == 503
    assert counted.grew == 1


def test_redis_errors_count_by_class_once_per_failed_command(app_env):
    app = create_app({**app_env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "REDIS_RETRIES": "2"})
    with Delta("redis_errors_total", error="ConnectionError") as counted:
        assert app.test_client().get("/health/ready").status_code == 503  # one PING, retried twice
    assert counted.grew == 1
    assert value("readiness_check_ok", check="redis") == 0
    assert value("readiness_check_ok", check="postgres") == 1


def test_the_pool_reports_checkouts_waits_and_timeouts(app_env):
    # whole seconds: Flask-SQLAlchemy's engine_from_config makes pool_timeout an int
    app = create_app({**app_env, "DB_POOL_SIZE": "1", "DB_POOL_TIMEOUT": "1"})
    with app.app_context():
        engine = db.engine
        with engine.connect() as held:
            held.execute(text("SELECT 1"))
            assert value("db_pool_checked_out") == 1 and value("db_pool_limit") == 1
            with Delta("db_pool_waits_total") as waited, Delta("db_pool_timeouts_total") as gave_up:
                with pytest.raises(Exception, match="QueuePool limit"):
                    engine.connect()
            assert (waited.grew, gave_up.grew) == (1, 1)
        assert value("db_pool_checked_out") == 0

        # a wait that ends in a connection: one wait, no timeout
        held = engine.connect()
        release = threading.Timer(0.05, held.close)
        with Delta("db_pool_waits_total") as waited, Delta("db_pool_timeouts_total") as gave_up:
            release.start()
            engine.connect().close()
        assert (waited.grew, gave_up.grew) == (1, 0)
        engine.dispose()
