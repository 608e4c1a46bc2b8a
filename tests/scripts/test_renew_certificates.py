"""scripts/renew-certificates.sh: `certbot renew` through Compose, then an nginx reload only if
the certificate nginx reads changed, and no reload when renewal fails. Compose is replaced by a
recording stub whose certbot changes the certificate when RENEWS is set."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import REPO

SCRIPT = REPO / "scripts" / "renew-certificates.sh"
FILES = "--file docker-compose.yml --file docker-compose.prod.yml"
CHECKSUM = f"{FILES} exec -T nginx sha256sum /etc/nginx/certs/fullchain.pem"
CERTBOT = f"{FILES} run --rm certbot renew --non-interactive --no-random-sleep-on-renew"
RELOAD = f"{FILES} exec -T nginx nginx -s reload"


@pytest.fixture
def project(tmp_path):
    """A deploy directory with the Compose files and a stub `docker compose` that logs its calls."""
    for name in ("docker-compose.yml", "docker-compose.prod.yml"):
        shutil.copy(REPO / name, tmp_path / name)
    (tmp_path / "fullchain.pem").write_text("the certificate nginx reads\n")
    stub = tmp_path / "fake-compose"
    stub.write_text('#!/bin/sh\necho "$*" >> "$CALLS"\n'
                    '[ -z "$FAIL_ON" ] || case "$*" in *"$FAIL_ON"*) exit 7;; esac\n'
                    'case "$*" in\n'
                    '  *"sha256sum /etc/nginx/certs/fullchain.pem") exec sha256sum "$CERT";;\n'
                    '  *"run --rm certbot"*) [ -z "$RENEWS" ] || echo renewed >> "$CERT";;\n'
                    'esac\n')
    stub.chmod(0o755)
    return tmp_path


def run(project: Path, *args: str, fail_on: str = "", renews: bool = False
        ) -> tuple[subprocess.CompletedProcess, list[str]]:
    calls = project / "calls.log"
    env = {**os.environ, "COMPOSE": str(project / "fake-compose"), "CALLS": str(calls), "FAIL_ON": fail_on,
           "CERT": str(project / "fullchain.pem"), "RENEWS": "1" if renews else ""}
    result = subprocess.run([str(SCRIPT), *args], cwd=project, env=env, capture_output=True, text=True, timeout=30)
    return result, calls.read_text().splitlines() if calls.exists() else []


def test_a_renewed_certificate_is_loaded_by_a_reload(project):
    result, calls = run(project, renews=True)
    assert result.returncode == 0, result.stderr
    assert calls == [CHECKSUM, CERTBOT, CHECKSUM, RELOAD]
    assert "certificate renewed: reloading nginx" in result.stdout


def test_nothing_renewed_means_no_reload(project):
    """The daily run: a reload closes clients' idle connections, so none without a new certificate."""
    result, calls = run(project)
    assert result.returncode == 0, result.stderr
    assert calls == [CHECKSUM, CERTBOT, CHECKSUM]
    assert "certificate unchanged: nginx not reloaded" in result.stdout


def test_dry_run_is_passed_to_certbot(project):
    _, calls = run(project, "--dry-run")
    assert calls[1] == f"{CERTBOT} --dry-run"


def test_a_failed_renewal_does_not_reload(project):
    result, calls = run(project, fail_on="certbot", renews=True)
    assert result.returncode == 7
    assert calls == [CHECKSUM, CERTBOT]


def test_an_nginx_that_is_not_running_stops_the_script_first_and_names_the_fix(project):
    result, calls = run(project, fail_on="sha256sum")
    assert result.returncode == 1
    assert calls == [CHECKSUM]
    assert "fix: start nginx" in result.stderr


def test_a_failed_reload_exits_1_and_says_nginx_serves_the_old_certificate(project):
    result, calls = run(project, fail_on="nginx -s reload", renews=True)
    assert result.returncode == 1
    assert calls == [CHECKSUM, CERTBOT, CHECKSUM, RELOAD]
    assert "nginx did not reload" in result.stderr and "old certificate" in result.stderr


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
