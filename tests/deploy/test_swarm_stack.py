"""deploy/swarm/stack.yml as `docker stack config` renders it, without an engine: the settings
a reviewer checks first, and the ones that must agree with the rest of the kit. The stack runs
for real, under load, in tests/docker/test_swarm.py."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from harness import REPO
from harness.docker import docker_client

STACK = REPO / "deploy" / "swarm" / "stack.yml"
TEMPLATE = REPO / "nginx" / "templates" / "default.conf.template"
# what swarm.sh exports, and what .env gives
VARIABLES = {"REGISTRY": "registry.example.com/acme", "TAG": "a" * 40, "NGINX_TAG": "a" * 40, "MIGRATE_TAG": "a" * 40,
             "DOMAIN": "app.example.com", **{f"{name.upper()}_SECRET": f"flask-kit_{name}_0123456789ab" for name in (
                 "secret_key", "database_url", "redis_url", "postgres_password", "redis_password")}}


@pytest.fixture(scope="module")
def stack() -> dict:
    rendered = subprocess.run([docker_client(), "stack", "config", "--compose-file", str(STACK)],
                              env={"PATH": "/usr/local/bin:/usr/bin:/bin", **VARIABLES}, capture_output=True,
                              text=True, timeout=60, check=True)
    return yaml.safe_load(rendered.stdout)


def test_every_nginx_variable_the_site_template_reads_is_set(stack):
    used = set(re.findall(r"\$\{(NGINX_\w+)\}", TEMPLATE.read_text()))
    assert used - set(stack["services"]["nginx"]["environment"]) == set()


def test_no_service_needs_a_virtual_ip_or_the_routing_mesh(stack):
    """This kit's hosts may have no IPVS: services are reached by their tasks' addresses."""
    services = stack["services"]
    for name in ("web", "db", "redis"):
        assert services[name]["deploy"]["endpoint_mode"] == "dnsrr", name
    assert {port["mode"] for port in services["nginx"]["ports"]} == {"host"}
    assert all("ports" not in services[name] for name in services if name != "nginx")


def test_web_rolls_start_first_and_swarm_rolls_back_a_release_that_fails_readiness(stack):
    web = stack["services"]["web"]
    update = web["deploy"]["update_config"]
    assert (update["order"], update["parallelism"], update["failure_action"]) == ("start-first", 1, "rollback")
    assert "monitor" in update and web["deploy"]["rollback_config"]["order"] == "start-first"
    assert "/health/ready" in " ".join(web["healthcheck"]["test"])
    assert stack["services"]["migrate"]["deploy"]["mode"] == "replicated-job"
    assert "db" in stack["services"]["migrate"]["command"] and "upgrade" in stack["services"]["migrate"]["command"]


def test_every_service_is_hardened_and_reads_its_secrets_from_files(stack):
    for name, service in stack["services"].items():
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"], name
        assert not any(key.endswith(("PASSWORD", "SECRET_KEY", "_URL")) and value
                       for key, value in service.get("environment", {}).items()), name
        for variable, path in service.get("environment", {}).items():
            if variable.endswith("_FILE"):
                assert path.removeprefix("/run/secrets/") in {secret["source"] for secret in service["secrets"]}
    assert all(secret.get("external") for secret in stack["secrets"].values())
