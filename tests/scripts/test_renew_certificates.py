"""scripts/renew-certificates.sh: `certbot renew` through Compose, then an nginx reload, in
that order, and no reload when renewal fails. Compose is replaced by a recording stub."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import REPO

SCRIPT = REPO / "scripts" / "renew-certificates.sh"


@pytest.fixture
def project(tmp_path):
    """A deploy directory with the Compose files and a stub `docker compose` that logs its calls."""
    for name in ("docker-compose.yml", "docker-compose.prod.yml"):
        shutil.copy(REPO / name, tmp_path / name)
    stub = tmp_path / "fake-compose"
    stub.write_text('#!/bin/sh\necho "$*" >> "$CALLS"\n[ -z "$FAIL_ON" ] || case "$*" in *"$FAIL_ON"*) exit 7;; esac\n')
    stub.chmod(0o755)
    return tmp_path


def run(project: Path, *args: str, fail_on: str = "") -> tuple[subprocess.CompletedProcess, list[str]]:
    calls = project / "calls.log"
    env = {**os.environ, "COMPOSE": str(project / "fake-compose"), "CALLS": str(calls), "FAIL_ON": fail_on}
    result = subprocess.run([str(SCRIPT), *args], cwd=project, env=env, capture_output=True, text=True, timeout=30)
    return result, calls.read_text().splitlines() if calls.exists() else []


def test_renews_then_reloads_nginx(project):
    result, calls = run(project)
    assert result.returncode == 0, result.stderr
    files = "--file docker-compose.yml --file docker-compose.prod.yml"
    assert calls == [f"{files} run --rm certbot renew --non-interactive --no-random-sleep-on-renew",
                     f"{files} exec -T nginx nginx -s reload"]


def test_dry_run_is_passed_to_certbot(project):
    _, calls = run(project, "--dry-run")
    assert calls[0].endswith("certbot renew --non-interactive --no-random-sleep-on-renew --dry-run")


def test_a_failed_renewal_does_not_reload(project):
    result, calls = run(project, fail_on="certbot")
    assert result.returncode == 7
    assert len(calls) == 1


@pytest.mark.parametrize("args, code", [(["--help"], 0), (["--bogus"], 2), (["--dry-run", "x"], 2)])
def test_usage(project, args, code):
    result, calls = run(project, *args)
    assert result.returncode == code
    assert "Usage: scripts/renew-certificates.sh [--dry-run]" in result.stdout + result.stderr
    assert calls == []


def test_refuses_to_run_outside_the_deploy_directory(tmp_path):
    result = subprocess.run([str(SCRIPT)], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "run from the directory that holds docker-compose.yml" in result.stderr
