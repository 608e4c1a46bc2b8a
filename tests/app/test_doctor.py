"""The production doctor against the real native stack (Postgres, Redis, Gunicorn, nginx TLS on
loopback): a good deploy passes every row; one bad setting at a time fails (or warns) its row
with a message that names the fix. Broken sites are real servers too: nginx trees edited the
way a wrong config would be, a Gunicorn whose Redis is gone, a database one migration behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import cached_property
from pathlib import Path

import pytest
import yaml
from alembic.script import ScriptDirectory
from click.testing import CliRunner
from flask_migrate import upgrade

from app import create_app, doctor
from app.datastores import MIGRATIONS_DIR
from app.extensions import db
from harness import REPO, VENV_BIN
from harness.nginx import NginxServer
from harness.process import free_port
from harness.servers import GunicornServer
from harness.stack import NativeStack

ROWS = ["secrets", "domain", "tag", "connection budget", "migrations", "readiness", "tls", "certificate",
        "headers", "exposure", "backup", "disk"]


def backup_dir(parent: Path, hours_old: float, name: str = "kit") -> Path:
    """A backup directory as scripts/backup.sh leaves it: <db>-<UTC stamp>.dump and its checksum."""
    directory = parent / f"backups-{hours_old:g}h"
    if directory.exists():
        return directory
    directory.mkdir()
    stamp = datetime.now(timezone.utc) - timedelta(hours=hours_old)
    dump = directory / f"{name}-{stamp:%Y%m%dT%H%M%SZ}.dump"
    dump.write_bytes(b"PGDMP")
    (directory / f"{dump.name}.sha256").write_text(f"0  {dump.name}\n")
    return directory


class Sites:
    """The stack's site and broken variants of it, each started on first use, all stopped at the
    end of the module."""

    def __init__(self, stack: NativeStack, workdir: Path):
        self.stack = stack
        self.workdir = workdir
        self.cleanup = contextlib.ExitStack()

    def nginx(self, edit: Callable[[NginxServer], None], upstream_port: int | None = None) -> NginxServer:
        """The repo's nginx in front of the stack's Gunicorn, with `edit` applied to its tree."""
        server = NginxServer(upstream_port or self.stack.gunicorn.port)
        self.cleanup.callback(server.close)
        edit(server)
        server.start()
        return server

    @cached_property
    def expiring_certificate(self) -> NginxServer:
        def ten_day_certificate(server: NginxServer) -> None:
            certs = server.prefix / "certs"
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-days", "10", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                 "-keyout", str(certs / "privkey.pem"), "-out", str(certs / "fullchain.pem")],
                check=True, capture_output=True, timeout=60,
            )
            (certs / "fullchain.pem").chmod(0o644)

        return self.nginx(ten_day_certificate)

    @cached_property
    def tls_1_1(self) -> NginxServer:
        def old_protocols(server: NginxServer) -> None:
            tls = server.prefix / "snippets" / "tls.conf"
            text = tls.read_text().replace("ssl_protocols TLSv1.2 TLSv1.3;", "ssl_protocols TLSv1.1 TLSv1.2 TLSv1.3;")
            # TLS 1.1 has no GCM suites, and OpenSSL 3 allows it only at security level 0
            text = text.replace("ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:", "ssl_ciphers DEFAULT:@SECLEVEL=0:")
            tls.write_text(text)

        return self.nginx(old_protocols)

    @cached_property
    def no_referrer_policy(self) -> NginxServer:
        def drop_header(server: NginxServer) -> None:
            snippet = server.prefix / "snippets" / "security-headers.conf"
            snippet.write_text(snippet.read_text().replace("add_header Referrer-Policy", "# Referrer-Policy"))

        return self.nginx(drop_header)

    @cached_property
    def public_metrics(self) -> NginxServer:
        def serve_metrics(server: NginxServer) -> None:
            conf = server.prefix / "conf.d" / "default.conf"
            conf.write_text(conf.read_text().replace(
                "    location /api/ {", "    location = /metrics { return 200 'requests_total 1\\n'; }\n"
                                       "    location /api/ {", 1))

        return self.nginx(serve_metrics)

    @cached_property
    def unready(self) -> NginxServer:
        """A Gunicorn whose Redis is gone: /health answers, /health/ready is 503."""
        gunicorn = GunicornServer({**self.stack.environment(), "WEB_CONCURRENCY": "1",
                                   "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
        self.cleanup.callback(gunicorn.close)
        gunicorn.start()
        return self.nginx(lambda server: None, upstream_port=gunicorn.port)

    @cached_property
    def database_one_migration_behind(self) -> str:
        scripts = ScriptDirectory(str(MIGRATIONS_DIR))
        (head,) = scripts.get_heads()
        previous = scripts.get_revision(head).down_revision
        url = self.stack.postgres.create_database("kit_behind")
        app = create_app({"APP_ENV": "testing", "DATABASE_URL": url, "LOG_LEVEL": "WARNING"})
        with app.app_context():
            upgrade(revision=previous)
            db.engine.dispose()
        return url

    def backups(self, hours_old: float) -> Path:
        return backup_dir(self.workdir, hours_old)

    @cached_property
    def no_backups(self) -> Path:
        directory = self.workdir / "no-backups"
        directory.mkdir()
        return directory


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    with NativeStack(workers=1) as stack:
        sites = Sites(stack, tmp_path_factory.mktemp("doctor"))
        with sites.cleanup:
            yield sites


@dataclass
class Deploy:
    """One doctor run: the deploy's .env (app settings and Compose values) and the options."""

    env: dict[str, str]
    options: dict[str, str] = field(default_factory=dict)
    flags: tuple[str, ...] = ("--allow-localhost",)

    def args(self) -> list[str]:
        return [*self.flags, *(item for pair in self.options.items() for item in pair)]

    def env_text(self) -> str:
        return "".join(f"{name}={value}\n" for name, value in self.env.items())


def good_deploy(sites: Sites) -> Deploy:
    """A production deploy on loopback that gets every row right."""
    nginx = sites.stack.nginx
    return Deploy(
        env={
            "REGISTRY": "registry.example.com/acme",
            "TAG": "0123456789abcdef0123456789abcdef01234567",
            "DOMAIN": "localhost",
            # 1 worker x (20 + 0) x 2 x 2 replicas + 2 = 82 of Postgres's 100 - 10 reserved
            "WEB_REPLICAS": "2",
            "WEB_CONCURRENCY": "1",
            "SECRET_KEY": secrets.token_hex(32),
            "POSTGRES_PASSWORD": secrets.token_hex(32),
            "REDIS_PASSWORD": secrets.token_hex(32),
            "DATABASE_URL": sites.stack.database_url,
            "REDIS_URL": sites.stack.redis.url,
            "BACKUP_DIR": str(sites.backups(hours_old=1)),
        },
        options={
            "--url": f"https://localhost:{nginx.https_port}",
            "--cafile": nginx.cafile,
            # nothing listens on these, as nothing may on the real host's 5432 and 6379
            "--db-port": str(free_port()),
            "--redis-port": str(free_port()),
        },
    )


def run_doctor(deploy: Deploy, tmp_path: Path) -> tuple[int, list[dict]]:
    """In process, through Click, with --json; the .env's names are removed from the environment
    so that only the file sets them."""
    env_file = tmp_path / "deploy.env"
    env_file.write_text(deploy.env_text())
    result = CliRunner().invoke(doctor.command, ["--env-file", str(env_file), "--json", *deploy.args()],
                                env=dict.fromkeys(deploy.env))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, json.loads(result.output)


def by_check(rows: list[dict]) -> dict[str, dict]:
    return {row["check"]: row for row in rows}


@pytest.mark.slow
def test_a_good_deploy_passes_every_row(sites, tmp_path):
    exit_code, rows = run_doctor(good_deploy(sites), tmp_path)

    assert [row["check"] for row in rows] == ROWS
    assert {row["check"]: row["status"] for row in rows} == dict.fromkeys(ROWS, "pass"), rows
    assert exit_code == 0
    details = by_check(rows)
    assert "82 connections" in details["connection budget"]["detail"]
    assert "TLS 1.2 and 1.3 accepted; 1.0 and 1.1 refused" == details["tls"]["detail"]


def env(**changes) -> Callable[[Sites], tuple[dict, dict]]:
    return lambda sites: (changes, {})


def site(name: str) -> Callable[[Sites], tuple[dict, dict]]:
    """Point --url (and --cafile) at one of the broken sites."""
    def change(sites: Sites) -> tuple[dict, dict]:
        nginx = getattr(sites, name)
        return {}, {"--url": f"https://localhost:{nginx.https_port}", "--cafile": nginx.cafile}
    return change


@pytest.mark.parametrize(("row", "status", "fix", "change"), [
    pytest.param("secrets", "fail", "token_urlsafe", env(SECRET_KEY="too-short-a-key"), id="weak SECRET_KEY"),
    pytest.param("secrets", "fail", "openssl rand -hex 32", env(POSTGRES_PASSWORD="dev-only-postgres-password"),
                 id="dev Postgres password"),
    pytest.param("secrets", "fail", "openssl rand -hex 32",
                 lambda sites: ({"DATABASE_URL": sites.stack.database_url.replace(
                     "postgres@", "postgres:dev-only-postgres-password@")}, {}), id="dev password in DATABASE_URL"),
    pytest.param("secrets", "warn", "openssl rand -hex 32", env(REDIS_PASSWORD="hunter2"), id="short password"),
    pytest.param("domain", "fail", "DNS name", env(DOMAIN="127.0.0.1"), id="DOMAIN an IP"),
    pytest.param("domain", "fail", "docs/certificates.md", env(DOMAIN="app.example.com"),
                 id="certificate not for DOMAIN"),
    pytest.param("tag", "fail", "deploy.sh deploy <git sha>", env(TAG="latest"), id="TAG latest"),
    pytest.param("tag", "warn", "SHA", env(TAG="v1.2.0"), id="TAG a version"),
    pytest.param("connection budget", "fail", "lower WEB_CONCURRENCY, WEB_REPLICAS",
                 env(WEB_CONCURRENCY="8", WEB_REPLICAS="4"), id="budget over max_connections"),
    pytest.param("migrations", "fail", "run --rm migrate",
                 lambda sites: ({"DATABASE_URL": sites.database_one_migration_behind}, {}),
                 id="database one migration behind"),
    pytest.param("readiness", "fail", "logs web db redis", site("unready"), id="readiness 503"),
    pytest.param("certificate", "fail", "renew-certificates.sh", site("expiring_certificate"),
                 id="certificate expires in 10 days"),
    pytest.param("tls", "fail", "ssl_protocols TLSv1.2 TLSv1.3", site("tls_1_1"), id="TLS 1.1 accepted"),
    pytest.param("headers", "fail", "security-headers.conf", site("no_referrer_policy"),
                 id="Referrer-Policy missing"),
    pytest.param("exposure", "fail", "deny it in nginx", site("public_metrics"), id="/metrics public"),
    pytest.param("exposure", "fail", "publish no ports",
                 lambda sites: ({}, {"--db-port": str(sites.stack.postgres.port)}), id="db port reachable"),
    pytest.param("backup", "warn", "logs backup", lambda sites: ({"BACKUP_DIR": str(sites.backups(30))}, {}),
                 id="backup 30 h old"),
    pytest.param("backup", "fail", "backup.sh", lambda sites: ({"BACKUP_DIR": str(sites.backups(60))}, {}),
                 id="backup 60 h old"),
    pytest.param("backup", "fail", "backup.sh", lambda sites: ({"BACKUP_DIR": str(sites.no_backups)}, {}),
                 id="no backup"),
    pytest.param("disk", "fail", "grow the disk", lambda sites: ({}, {"--disk-fail-gib": "1000000"}),
                 id="low disk"),
])
@pytest.mark.slow
def test_one_bad_setting_fails_its_row(sites, tmp_path, row, status, fix, change):
    deploy = good_deploy(sites)
    env_changes, option_changes = change(sites)
    deploy.env.update(env_changes)
    deploy.options.update(option_changes)

    exit_code, rows = run_doctor(deploy, tmp_path)

    result = by_check(rows)[row]
    assert result["status"] == status, result
    assert fix in result["detail"], result
    others = {check: entry["status"] for check, entry in by_check(rows).items() if check != row}
    assert set(others.values()) == {"pass"}, others
    assert exit_code == (1 if status == "fail" else 0)


def test_an_unreadable_max_connections_assumes_postgres_default():
    """The budget is a property of the settings: an unreachable database (which the migrations
    and readiness rows report) must not hide one that cannot fit even the default."""
    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/kit"

    fits = doctor.check_connection_budget(doctor.Target(settings={"DATABASE_URL": closed, "WEB_CONCURRENCY": "1"}))
    too_big = doctor.check_connection_budget(doctor.Target(settings={"DATABASE_URL": closed, "WEB_CONCURRENCY": "2"}))

    assert fits.status == "warn" and "assumed Postgres's default" in fits.detail, fits
    assert "Postgres allows 100 - 10 reserved = 90" in fits.detail
    assert too_big.status == "fail" and "lower WEB_CONCURRENCY" in too_big.detail, too_big


def test_a_rollout_that_adds_fewer_replicas_counts_only_those():
    """deploy.sh starts a whole new set of replicas beside the old ones; a Kubernetes rollout
    starts only its maxSurge more (WEB_ROLLOUT_SURGE, deploy/k8s/base/settings.yaml)."""
    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/kit"
    settings = {"DATABASE_URL": closed, "WEB_CONCURRENCY": "1", "WEB_REPLICAS": "3"}

    compose = doctor.check_connection_budget(doctor.Target(settings=settings))
    kubernetes = doctor.check_connection_budget(doctor.Target(settings={**settings, "WEB_ROLLOUT_SURGE": "1"}))

    assert compose.status == "fail" and "x 6 replicas + 2 others = 122 connections" in compose.detail, compose
    assert kubernetes.status == "warn" and "x 4 replicas + 2 others = 82 connections" in kubernetes.detail, kubernetes


def test_a_backup_without_a_stamp_is_aged_by_its_mtime(tmp_path):
    directory = tmp_path / "backups"
    directory.mkdir()
    dump = directory / "copied-by-hand.dump"
    dump.write_bytes(b"PGDMP")
    three_days_ago = datetime.now(timezone.utc).timestamp() - 72 * 3600
    os.utime(dump, (three_days_ago, three_days_ago))

    row = doctor.check_backup(doctor.Target(settings={}, backup_dir=directory))

    assert (row.status, row.check) == ("fail", "backup")
    assert "copied-by-hand.dump, 72 h old" in row.detail


def test_offline_the_live_site_rows_skip_and_deploy_rows_need_the_env_file():
    """No --url and no .env: only what the environment tells can be checked."""
    target = doctor.Target(settings={}, backup_dir=None)

    rows = {row.check: row for row in doctor.run_checks(target)}

    for check in ("readiness", "tls", "certificate", "headers", "exposure", "domain", "tag"):
        assert rows[check].status == "skip", rows[check]
    assert "--url" in rows["tls"].detail and "--env-file" in rows["tag"].detail
    assert rows["secrets"].status == "fail" and "SECRET_KEY is missing" in rows["secrets"].detail
    assert rows["backup"].status == "warn" and "--backup-dir" in rows["backup"].detail


def test_the_development_defaults_are_the_ones_in_docker_compose_yml():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    app_env = compose["x-app"]["environment"]
    found = {
        app_env["SECRET_KEY"],
        app_env["DATABASE_URL"].split("://", 1)[1].split("@")[0].split(":", 1)[1],
        compose["services"]["db"]["environment"]["POSTGRES_PASSWORD"],
    }
    assert found <= doctor.DEVELOPMENT_SECRETS


def flask_doctor(args: list[str], environ: dict[str, str], stdin: str = "", module: bool = False):
    """The command as ops run it: `flask --app wsgi doctor` (or `python -m app.doctor`) with the
    app's settings in the environment, as in the web container."""
    command = [str(VENV_BIN / "python"), "-m", "app.doctor"] if module else \
        [str(VENV_BIN / "flask"), "--app", "wsgi", "doctor"]
    return subprocess.run([*command, *args], input=stdin, capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={"PATH": os.environ["PATH"], "LANG": "C.UTF-8", **environ})


def container_environment(sites: Sites) -> dict[str, str]:
    return {"APP_ENV": "production", "SECRET_KEY": secrets.token_hex(32), "DATABASE_URL": sites.stack.database_url,
            "REDIS_URL": sites.stack.redis.url, "LOG_LEVEL": "WARNING"}


@pytest.mark.slow
def test_flask_doctor_exits_0_on_a_good_deploy_and_1_on_a_bad_one(sites):
    """App settings from the environment, the deploy's .env on stdin (`--env-file -`)."""
    deploy = good_deploy(sites)
    deploy_env = {name: deploy.env[name] for name in ("TAG", "DOMAIN", "WEB_REPLICAS", "WEB_CONCURRENCY",
                                                      "POSTGRES_PASSWORD", "REDIS_PASSWORD", "BACKUP_DIR")}
    environ = container_environment(sites)

    good = flask_doctor(["--env-file", "-", *deploy.args()], environ, Deploy(deploy_env).env_text())
    bad = flask_doctor(["--env-file", "-", "--json", *deploy.args()], environ,
                       Deploy({**deploy_env, "TAG": "latest"}).env_text())

    assert good.returncode == 0, good.stdout + good.stderr
    lines = good.stdout.splitlines()
    assert [line.split()[0] for line in lines[:-1]] == [row.split()[0] for row in ROWS]
    assert lines[-1] == "12 pass"
    assert bad.returncode == 1, bad.stderr
    rows = by_check(json.loads(bad.stdout))
    assert rows["tag"]["status"] == "fail"


@pytest.mark.slow
def test_python_m_app_doctor_reports_a_config_the_app_refuses(sites):
    """`flask --app wsgi` cannot load an app whose config is refused; the module still runs."""
    environ = {**container_environment(sites), "SECRET_KEY": "short"}

    result = flask_doctor(["--json"], environ, module=True)

    assert result.returncode == 1, result.stderr
    row = by_check(json.loads(result.stdout))["secrets"]
    assert row["status"] == "fail" and "SECRET_KEY is too short" in row["detail"]
