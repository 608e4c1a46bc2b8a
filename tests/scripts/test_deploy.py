"""scripts/deploy.sh and scripts/deploy-over-ssh.sh refuse bad arguments and a wrong directory
before touching anything. What they do to a running stack, under load, is tested on the
private Docker engine (tests/docker/test_releases.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import REPO

DEPLOY = REPO / "scripts" / "deploy.sh"
OVER_SSH = REPO / "scripts" / "deploy-over-ssh.sh"
STUB = """#!/bin/sh
echo "$(basename "$0") $*" >> "$CALLS"
exit 0
"""


@pytest.fixture
def server(tmp_path):
    """A deploy directory with the Compose files and a .env; Compose and Docker are stubs that
    record any call (none is expected here)."""
    for name in ("docker-compose.yml", "docker-compose.prod.yml"):
        shutil.copy(REPO / name, tmp_path / name)
    (tmp_path / ".env").write_text("REGISTRY=ghcr.io/acme\nTAG=0123456\nDOMAIN=app.example.com\n")
    for name in ("compose", "docker"):
        (tmp_path / name).write_text(STUB)
        (tmp_path / name).chmod(0o755)
    return tmp_path


def run(server: Path, *args: str):
    calls = server / "calls.log"
    env = {**os.environ, "COMPOSE": str(server / "compose"), "DOCKER": str(server / "docker"), "CALLS": str(calls)}
    result = subprocess.run([str(DEPLOY), *args], cwd=server, env=env, capture_output=True, text=True, timeout=30)
    return result, calls.read_text().splitlines() if calls.exists() else []


@pytest.mark.parametrize("args, code, message", [
    (["--help"], 0, "Usage: scripts/deploy.sh deploy <git-sha>"),
    ([], 2, "Usage: scripts/deploy.sh deploy <git-sha>"),
    (["ship", "0123456"], 2, "Usage:"),
    (["deploy", "main"], 1, "deploy: error: start failed: 'main' is not a git commit SHA; fix: pass 7 to 40"),
    (["deploy", "abc; rm -rf /"], 1, "is not a git commit SHA"),
    (["deploy"], 1, "'' is not a git commit SHA"),
    (["deploy", "0123456", "sha256:" + "a" * 64], 1, "1 digest(s) given; fix: pass none, or the web, nginx and backup"),
    (["deploy", "0123456", *["sha256:" + "a" * 64] * 2, "sha256:$(id)"], 1, "'sha256:$(id)' is not an image digest"),
    (["scale", "0"], 1, "'0' is not a replica count"),
    (["scale", "two"], 1, "'two' is not a replica count"),
    (["rollback", "fedcba9"], 1, "fedcba9 is not a recorded release; fix: pick one from"),
    (["rollback"], 1, "no earlier release is recorded; fix: deploy a commit instead"),
])
def test_arguments_are_validated_before_anything_runs(server, args, code, message):
    result, calls = run(server, *args)

    assert result.returncode == code
    assert message in result.stdout + result.stderr
    assert calls == []


def test_refuses_to_run_without_env_file(server):
    (server / ".env").unlink()

    result, calls = run(server, "deploy", "0123456")

    assert result.returncode == 1
    assert "deploy: error: start failed: .env is missing; fix: create it first" in result.stderr
    assert calls == []


def test_refuses_to_run_outside_the_deploy_directory(server, tmp_path_factory):
    result, calls = run(tmp_path_factory.mktemp("elsewhere"), "status")

    assert result.returncode == 1
    assert "the Compose files are not here" in result.stderr


@pytest.mark.parametrize("missing", ["DEPLOY_HOST", "DEPLOY_USER", "DEPLOY_SSH_KEY_FILE", "DEPLOY_KNOWN_HOSTS_FILE"])
def test_deploy_over_ssh_names_a_missing_setting(missing):
    env = {"PATH": os.environ["PATH"], "DEPLOY_HOST": "h", "DEPLOY_USER": "u", "DEPLOY_SSH_KEY_FILE": "k",
           "DEPLOY_KNOWN_HOSTS_FILE": "kh"}
    del env[missing]

    result = subprocess.run([str(OVER_SSH), "status"], env=env, capture_output=True, text=True, timeout=30)

    assert result.returncode == 1
    assert f"{missing} is not set" in result.stderr
