"""Fixtures: real PostgreSQL and Redis servers for the session, a fresh database per test,
apps wired to them, and Gunicorn and nginx prefixes that are removed afterwards."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from app import create_app
from app.extensions import db
from harness.docker import engine_description
from harness.nginx import world_readable_dir
from harness.servers import GunicornServer, PostgresServer, RedisServer, migrate_to_head

TEMPLATE_DATABASE = "kit_template"


def pytest_report_header(config) -> str:
    """Which engine and images the container tests use (the KIT_DOCKER switch)."""
    return engine_description()


# `make test` runs two processes (pytest-xdist, -n 2). The container tests go to one of them as
# one unit: one dockerd may use the cache's data root at a time, and they share its images,
# registry and stacks. The drills end that unit: they hold the app to bounds on latency and
# throughput under load, and by then the other process has finished (beside it, a drill's
# login flood could not reach its limit, and a request bounded at 1 s took 2.1 s). The other
# process takes every other module meanwhile, each whole, so that a module's stack starts once
# and its tests run in order: first those that load both cores and assert no timing (they
# meet the image builds, which assert none either), then the rest as collected.
CONTAINER_TESTS = "tests/docker/"
LAST = "tests/drills/"
SATURATING = ("tests/bench/", "tests/app/api/test_fuzz.py")


def pytest_xdist_make_scheduler(config, log):
    """The units above. (xdist's own --dist loadgroup marks its groups in a node id attribute
    that pytest 9 no longer reads.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ContainerTestsTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "docker" if nodeid.startswith((CONTAINER_TESTS, LAST)) else nodeid.split("::", 1)[0]

    config.option.loadscopereorder = False  # the collection's order, set below, not the units' sizes
    return ContainerTestsTogether(config, log)


def pytest_collection_modifyitems(items) -> None:
    strays = [item.nodeid for item in items
              if item.get_closest_marker("docker") and not item.nodeid.startswith(CONTAINER_TESTS)]
    if strays:  # it would run beside the others, on a second dockerd
        raise pytest.UsageError(f"container tests belong in {CONTAINER_TESTS}: {strays}")
    # a unit runs in this order too; the sort is stable, so the rest stays as collected
    items.sort(key=lambda item: (not item.nodeid.startswith(CONTAINER_TESTS), item.nodeid.startswith(LAST),
                                 not item.nodeid.startswith(SATURATING)))


@pytest.fixture(scope="session")
def postgres_server():
    server = PostgresServer()
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def migrated_template(postgres_server) -> str:
    """A database at the migration head; each test gets a copy of it, which is fast."""
    migrate_to_head(postgres_server.create_database(TEMPLATE_DATABASE))
    return TEMPLATE_DATABASE


@pytest.fixture
def database_url(postgres_server, migrated_template):
    name = f"test_{uuid.uuid4().hex[:12]}"
    url = postgres_server.create_database(name, template=migrated_template)
    yield url
    postgres_server.drop_database(name)


@pytest.fixture
def redis_url(redis_server):
    yield redis_server.url
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()


@pytest.fixture
def app_env(database_url, redis_url) -> dict[str, str]:
    """The environment of a test app wired to the real servers; tests may extend it."""
    return {"APP_ENV": "testing", "DATABASE_URL": database_url, "REDIS_URL": redis_url}


@pytest.fixture
def app(app_env):
    app = create_app(app_env)
    yield app
    with app.app_context():
        db.engine.dispose()
    app.extensions["redis"].close()


@pytest.fixture
def client(app):
    return app.test_client()


class AuthActions:
    def __init__(self, client):
        self.client = client

    def register(self, email="ada@example.com", password="correct horse battery"):
        return self.client.post("/api/auth/register", json={"email": email, "password": password})

    def login(self, email="ada@example.com", password="correct horse battery"):
        return self.client.post("/api/auth/login", json={"email": email, "password": password})

    def register_and_login(self, email="ada@example.com", password="correct horse battery"):
        assert self.register(email, password).status_code == 201
        assert self.login(email, password).status_code == 200


@pytest.fixture
def auth(client):
    return AuthActions(client)


@pytest.fixture
def start_gunicorn():
    """Start the real Gunicorn with gunicorn.conf.py; every server is stopped at teardown."""
    servers: list[GunicornServer] = []

    def start(env: dict[str, str], app_module: str = "wsgi:app") -> GunicornServer:
        server = GunicornServer(env, app_module)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def nginx_prefix() -> Iterator[Path]:
    """A directory nginx's unprivileged workers can read, for a tree built by harness.nginx."""
    prefix = world_readable_dir()
    yield prefix
    shutil.rmtree(prefix, ignore_errors=True)
