"""scripts/deploy.sh: check out, pin TAG, pull, migrate, then up, in that order, stopping at the
first failure. Compose and git are replaced by stubs that record their calls."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import REPO

SCRIPT = REPO / "scripts" / "deploy.sh"
SHA = "0123456789abcdef0123456789abcdef01234567"
FILES = "--file docker-compose.yml --file docker-compose.prod.yml"
STUB = """#!/bin/sh
echo "$(basename "$0") $*" >> "$CALLS"
case "$*" in *"$FAIL_ON"*) [ -n "$FAIL_ON" ] && exit 7;; esac
exit 0
"""


@pytest.fixture
def project(tmp_path):
    """A deploy directory with the Compose files, a .env, and stubs for compose and git."""
    for name in ("docker-compose.yml", "docker-compose.prod.yml"):
        shutil.copy(REPO / name, tmp_path / name)
    (tmp_path / ".env").write_text("REGISTRY=ghcr.io/acme\nTAG=oldsha1\nDOMAIN=app.example.com\n")
    for name in ("compose", "git"):
        (tmp_path / name).write_text(STUB)
        (tmp_path / name).chmod(0o755)
    return tmp_path


def run(project: Path, *args: str, fail_on: str = ""):
    calls = project / "calls.log"
    env = {**os.environ, "COMPOSE": str(project / "compose"), "GIT": str(project / "git"),
           "CALLS": str(calls), "FAIL_ON": fail_on}
    result = subprocess.run([str(SCRIPT), *args], cwd=project, env=env, capture_output=True, text=True, timeout=30)
    return result, calls.read_text().splitlines() if calls.exists() else []


def test_deploys_in_order_and_pins_the_tag(project):
    result, calls = run(project, SHA)

    assert result.returncode == 0, result.stderr
    assert calls == [
        "git fetch --quiet origin",
        f"git checkout --quiet --detach {SHA}",
        f"compose {FILES} pull web migrate",
        f"compose {FILES} run --rm migrate",
        f"compose {FILES} up -d --wait",
    ]
    assert (project / ".env").read_text() == f"REGISTRY=ghcr.io/acme\nTAG={SHA}\nDOMAIN=app.example.com\n"


def test_a_failed_migration_leaves_the_running_release_alone(project):
    result, calls = run(project, SHA, fail_on="run --rm migrate")

    assert result.returncode == 7
    assert not any("up -d" in call for call in calls)


def test_a_missing_tag_line_is_added(project):
    (project / ".env").write_text("REGISTRY=ghcr.io/acme\n")

    run(project, SHA)

    assert (project / ".env").read_text().splitlines()[-1] == f"TAG={SHA}"


@pytest.mark.parametrize("args, code, message", [
    (["--help"], 0, "Usage: scripts/deploy.sh <git-sha>"),
    ([], 2, "Usage: scripts/deploy.sh <git-sha>"),
    (["main"], 1, "'main' is not a git commit SHA"),
    (["abc; rm -rf /"], 1, "is not a git commit SHA"),
])
def test_arguments_are_validated_before_anything_runs(project, args, code, message):
    result, calls = run(project, *args)

    assert result.returncode == code
    assert message in result.stdout + result.stderr
    assert calls == []


def test_refuses_to_run_without_env_file(project):
    (project / ".env").unlink()

    result, calls = run(project, SHA)

    assert result.returncode == 1
    assert ".env is missing" in result.stderr
    assert calls == []
