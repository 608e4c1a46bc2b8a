"""The production layering (docker-compose.yml + docker-compose.prod.yml) actually runs:
read-only, capability-free containers, a password-protected Redis, the registry image,
migrations as a one-off `run --rm migrate` first, exactly as docs/deploy.md does it.
Only the published ports move to 127.0.0.1 (tests/docker/compose.loopback.yml)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from harness import REPO
from harness.compose import DEV_FILES, Stack
from harness.https import SERVER_NAME
from harness.process import free_port

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REGISTRY = "flask-kit-test"
TAG = "e2e-prod"
PROD_ENV = {
    "REGISTRY": REGISTRY,
    "TAG": TAG,
    "DOMAIN": SERVER_NAME,
    "SECRET_KEY": uuid.uuid4().hex + uuid.uuid4().hex,
    "POSTGRES_PASSWORD": uuid.uuid4().hex,
    "REDIS_PASSWORD": uuid.uuid4().hex,
}
FILES = (*DEV_FILES, REPO / "docker-compose.prod.yml", Path(__file__).with_name("compose.loopback.yml"))


@pytest.fixture(scope="module")
def prod(docker_engine, base_images, web_image):
    # CI's job: build the image once, push it under the registry name; the production file
    # then only runs that exact tag.
    docker_engine.docker("tag", web_image.name, f"{REGISTRY}/flask-kit-web:{TAG}", capture=True)
    env = {**docker_engine.env, **base_images, **PROD_ENV}
    stack = Stack(docker_engine, f"fk-prod-{os.getpid()}", env, free_port(), free_port(), files=FILES, up_args=())
    env.update(HTTP_PORT=str(stack.http_port), HTTPS_PORT=str(stack.https_port))
    try:
        migrate = stack.compose("run", "--rm", "migrate", check=False, timeout=600)
        if migrate.returncode != 0:
            logs = stack.compose("logs", "--no-color", "--tail", "40", check=False).stdout
            raise AssertionError(f"run --rm migrate failed:\n{migrate.stderr[-3000:]}\n--- logs ---\n{logs}")
        stack.up()
        yield stack
    finally:
        stack.down()
        docker_engine.docker("rmi", f"{REGISTRY}/flask-kit-web:{TAG}", check=False, capture=True)


def test_prod_serves_the_app_over_https(prod, web_image):
    ready = prod.request("GET", "/health/ready")
    assert ready.status == 200, ready.body
    assert ready.json()["releaseId"] == web_image.git_sha
    credentials = {"email": f"prod-{uuid.uuid4().hex[:8]}@example.com", "password": "correct horse battery staple"}
    assert prod.request("POST", "/api/auth/register", credentials).status == 201
    login = prod.request("POST", "/api/auth/login", credentials)
    assert login.status == 200
    assert "Secure" in login.headers["Set-Cookie"], "production cookies are HTTPS-only"
    assert prod.request("POST", "/api/notes", {"title": "prod"}).status == 201


def test_prod_runs_the_registry_image_in_production_mode(prod):
    assert prod.inspect("web", "{{.Config.Image}}") == f"{REGISTRY}/flask-kit-web:{TAG}"
    assert prod.compose("exec", "-T", "web", "printenv", "APP_ENV").stdout.strip() == "production"


@pytest.mark.parametrize("service", ["db", "redis", "web", "nginx"])
def test_prod_root_filesystems_are_read_only(prod, service):
    assert prod.inspect(service, "{{.HostConfig.ReadonlyRootfs}}") == "true"
    assert prod.inspect(service, "{{.HostConfig.SecurityOpt}}") == "[no-new-privileges:true]"
    assert prod.inspect(service, "{{.HostConfig.LogConfig.Type}}") == "json-file"


def test_prod_web_has_no_capabilities_and_cannot_write_its_code(prod):
    status = prod.compose("exec", "-T", "web", "cat", "/proc/1/status").stdout
    assert "CapEff:\t0000000000000000" in status
    write = prod.compose("exec", "-T", "web", "sh", "-c", "echo x > /app/x", check=False)
    assert write.returncode != 0
    assert "Read-only file system" in write.stderr + write.stdout


def test_prod_redis_demands_the_password_and_keeps_it_off_the_command_line(prod):
    anonymous = prod.compose("exec", "-T", "redis", "redis-cli", "ping").stdout
    assert "NOAUTH" in anonymous
    password = PROD_ENV["REDIS_PASSWORD"]
    authenticated = prod.compose("exec", "-T", "-e", f"REDISCLI_AUTH={password}", "redis", "redis-cli", "ping")
    assert authenticated.stdout.strip() == "PONG"
    # what `ps` and /proc show of the running server: neither its argv nor its environment
    for view in ("cmdline", "environ"):
        # as the redis user: root in this container lacks CAP_SYS_PTRACE to read another user's environ
        assert password not in prod.compose("exec", "-T", "--user", "redis", "redis", "cat", f"/proc/1/{view}").stdout
    assert password not in prod.inspect("redis", "{{json .Config.Cmd}} {{json .Config.Entrypoint}}")
