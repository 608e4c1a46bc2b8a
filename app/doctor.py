"""The production doctor: checks a deploy's settings and, given its URL, the live site.

Each check is a function from a `Target` to one `Row` (check, status, detail), so a test can
run one alone. Status is pass, warn, fail or skip (a check that needs something not given,
such as the URL). A warn or fail detail names the fix. `command`, at the end, prints the rows:
as `flask --app wsgi doctor` (app/cli.py hands its arguments on), and as `python -m app.doctor`,
which runs it without loading the app, for when the app's own configuration is what stops it
from loading.
"""

from __future__ import annotations

import http.client
import io
import ipaddress
import json
import os
import re
import shutil
import socket
import ssl
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

import click
from dotenv import dotenv_values
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.pool import NullPool

from .capacity import ConnectionBudget, available_cpus
from .config import DEVELOPMENT_SECRET_KEY, PLACEHOLDER_MARKERS, ConfigError, _Reader, load_config
from .datastores import migration_revisions, schema_state

COMPOSE = "docker compose -f docker-compose.yml -f docker-compose.prod.yml"
# The development values in docker-compose.yml (tests/app/test_doctor.py keeps them in step).
DEVELOPMENT_SECRETS = frozenset({
    DEVELOPMENT_SECRET_KEY,
    "dev-only-insecure-secret-key-not-for-production",
    "dev-only-postgres-password",
})
# `openssl rand -hex 32` gives 64; anything under this was typed by a person.
MIN_PASSWORD_LENGTH = 16
GENERATE = "generate one with `openssl rand -hex 32`"
# Postgres's default, assumed when the live value cannot be read.
DEFAULT_MAX_CONNECTIONS = 100
DEFAULT_WEB_REPLICAS = 2
# migrate (one connection) and the backup's pg_dump (one)
OTHER_CONNECTIONS = 2
# certbot renews 30 days before expiry, so a certificate under 30 days means renewal is not
# running; under 14, Let's Encrypt's own expiry mails have started
CERT_FAIL_DAYS, CERT_WARN_DAYS = 14, 30
# HSTS must outlive a browser's gap between visits; one year is the preload list's minimum
HSTS_MIN_AGE = 365 * 24 * 3600
# the backup runs daily: 26 h allows a late run, 50 h means two were missed
BACKUP_WARN_HOURS, BACKUP_FAIL_HOURS = 26, 50
BACKUP_STAMP = re.compile(r"-(\d{8}T\d{6}Z)\.(?:dump|sqlite3)$")
# percent of the filesystem free; the absolute floors are options (Target)
DISK_WARN_PERCENT, DISK_FAIL_PERCENT = 10, 5
GIB = 1024 ** 3
GIT_SHA = re.compile(r"[0-9a-f]{7,40}")
DNS_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
# the handshake failed on our side, before anything reached the server
LOCAL_TLS_ERRORS = {"NO_CIPHERS_AVAILABLE", "NO_PROTOCOLS_AVAILABLE", "NO_SUITABLE_SIGNATURE_ALGORITHM"}


@dataclass(frozen=True)
class Row:
    check: str
    status: str  # pass | warn | fail | skip
    detail: str


@dataclass(frozen=True)
class Target:
    """What the doctor examines: the settings (the environment over the deploy's .env) and the
    live site's URL, with the thresholds and the allowances a loopback test needs."""

    settings: Mapping[str, str]
    # whether the deploy's .env was given: without it, rows that need its values skip
    deploy_env: bool = False
    url: str | None = None
    cafile: str | None = None
    allow_localhost: bool = False
    db_port: int = 5432
    redis_port: int = 6379
    backup_dir: Path | None = None
    disk_paths: tuple[Path, ...] = ()
    disk_warn_gib: float = 2.0
    disk_fail_gib: float = 1.0
    timeout: float = 5.0

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 443

    def context(self) -> ssl.SSLContext:
        """Full verification: the system's CAs, or only --cafile's."""
        return ssl.create_default_context(cafile=self.cafile)


def settings_from(environ: Mapping[str, str], env_file_text: str | None) -> dict[str, str]:
    """The deploy's .env under the environment: a variable set in both keeps the environment's
    value, as with Compose."""
    values = dotenv_values(stream=io.StringIO(env_file_text)) if env_file_text is not None else {}
    return {**{name: value for name, value in values.items() if value is not None}, **environ}


# --- settings --------------------------------------------------------------------------------

def app_config(settings: Mapping[str, str]) -> dict:
    """The app's settings parsed without production's refusals (check_secrets reports those),
    so the other rows can still read the pool size and the database URL."""
    environ = {**settings, "APP_ENV": "testing"}
    if not _has_database(settings):
        environ["DATABASE_URL"] = "sqlite://"  # a stand-in, so the rest still parses
    return load_config(environ)


def secret(settings: Mapping[str, str], name: str) -> str | None:
    """NAME, or the contents of NAME_FILE (Docker secrets), read by app/config.py's own reader;
    a problem with the file is the config row's to report, so here it is just no value."""
    try:
        return _Reader(settings).secret(name)
    except ConfigError:
        return None


def check_secrets(target: Target) -> Row:
    """The production config loads, and no secret is a development default or too short."""
    problems, weak = [], []
    try:
        load_config({**target.settings, "APP_ENV": "production"})
    except ConfigError as error:
        problems.append(str(error))
    try:
        config = app_config(target.settings)
    except ConfigError:
        config = {}
    database_url = config.get("SQLALCHEMY_DATABASE_URI")
    values = {
        "SECRET_KEY": secret(target.settings, "SECRET_KEY"),
        "DATABASE_URL's password": make_url(database_url).password if database_url else None,
        "REDIS_URL's password": urlsplit(config["REDIS_URL"]).password if config.get("REDIS_URL") else None,
        "POSTGRES_PASSWORD": secret(target.settings, "POSTGRES_PASSWORD"),
        "REDIS_PASSWORD": secret(target.settings, "REDIS_PASSWORD"),
    }
    checked = [name for name, value in values.items() if value]
    for name, value in values.items():
        if not value:
            continue
        if value in DEVELOPMENT_SECRETS or "dev-only" in value.lower():
            problems.append(f"{name} is the development default from docker-compose.yml: {GENERATE}")
        elif name != "SECRET_KEY" and any(marker in value.lower() for marker in PLACEHOLDER_MARKERS):
            problems.append(f"{name} is a placeholder: {GENERATE}")
        elif name != "SECRET_KEY" and len(value) < MIN_PASSWORD_LENGTH:
            weak.append(f"{name} is shorter than {MIN_PASSWORD_LENGTH} characters: {GENERATE}")
    if problems:
        return Row("secrets", "fail", "; ".join(problems + weak))
    if weak:
        return Row("secrets", "warn", "; ".join(weak))
    return Row("secrets", "pass", f"production config loads; no development default in {', '.join(checked)}")


def check_domain(target: Target) -> Row:
    """DOMAIN is a public DNS name, and the certificate at the URL is valid for it."""
    domain = (target.settings.get("DOMAIN") or "").strip().lower().rstrip(".")
    if not domain:
        if not target.deploy_env:
            return Row("domain", "skip", "DOMAIN unknown here: pass the deploy's .env with --env-file")
        return Row("domain", "fail", "DOMAIN is not set: set it in .env to the site's DNS name (app.example.com)")
    try:
        ipaddress.ip_address(domain)
        return Row("domain", "fail", f"DOMAIN={domain} is an IP address: certificates and nginx need the "
                                     "site's DNS name (app.example.com)")
    except ValueError:
        pass
    if domain == "localhost" or domain.endswith(".localhost"):
        if not target.allow_localhost:
            return Row("domain", "fail", f"DOMAIN={domain} is not a public name: set the site's DNS name "
                                         "(app.example.com)")
    elif "." not in domain or not all(DNS_LABEL.fullmatch(label) for label in domain.split(".")):
        return Row("domain", "fail", f"DOMAIN={domain} is not a fully qualified DNS name: set the site's "
                                     "name (app.example.com)")
    if not target.url:
        return Row("domain", "pass", f"DOMAIN={domain}; certificate not checked (no --url)")
    try:
        with _tls(target, target.context(), server_name=domain):
            pass
    except ssl.SSLCertVerificationError as error:
        return Row("domain", "fail", f"the certificate at {target.url} is not valid for {domain} "
                                     f"({error.verify_message}): issue one for DOMAIN (docs/certificates.md)")
    except OSError as error:
        return Row("domain", "fail", f"cannot reach {target.url}: {_reason(error)}")
    if target.host.lower() != domain:
        return Row("domain", "warn", f"the certificate is valid for {domain}, but --url names {target.host}: "
                                     "nginx answers only DOMAIN, so pass --url https://$DOMAIN")
    return Row("domain", "pass", f"DOMAIN={domain}, and the certificate at {target.url} is valid for it")


def check_tag(target: Target) -> Row:
    """TAG pins the release: a git SHA, never a moving name."""
    tag = (target.settings.get("TAG") or "").strip()
    if not tag:
        if not target.deploy_env:
            return Row("tag", "skip", "TAG unknown here: pass the deploy's .env with --env-file")
        return Row("tag", "fail", "TAG is not set: deploy a release with `./deploy.sh deploy <git sha>`")
    if tag in ("latest", "dev", "main", "master"):
        return Row("tag", "fail", f"TAG={tag} moves: pin the release's git SHA (`./deploy.sh deploy <git sha>`)")
    if not GIT_SHA.fullmatch(tag):
        return Row("tag", "warn", f"TAG={tag} is not a git SHA: CI pushes each release under its SHA; "
                                  "deploy that, so a rollback names an exact build")
    return Row("tag", "pass", f"TAG={tag}")


def check_connection_budget(target: Target) -> Row:
    """Every web worker's pool at once, during a release (old and new replicas), plus migrate
    and backup, fits under Postgres's max_connections less a reserve."""
    name = "connection budget"
    try:
        config = app_config(target.settings)
        workers = _int_setting(target.settings, "WEB_CONCURRENCY", available_cpus())
        replicas = _int_setting(target.settings, "WEB_REPLICAS", DEFAULT_WEB_REPLICAS)
        # the replicas a release starts beside the running ones before it stops any:
        # scripts/deploy.sh a whole new set, a Kubernetes rollout its maxSurge (deploy/k8s)
        surge = _int_setting(target.settings, "WEB_ROLLOUT_SURGE", replicas)
    except ConfigError as error:
        return Row(name, "fail", str(error))
    if not _has_database(target.settings):
        return Row(name, "skip", "DATABASE_URL is not set (see the secrets row)")
    if not config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        return Row(name, "skip", "DATABASE_URL is not PostgreSQL")
    read_error = None
    try:
        with _database(target) as connection:
            max_connections = int(connection.exec_driver_sql("SHOW max_connections").scalar())
    except Exception as error:  # noqa: BLE001 - any failure to read falls back to the default
        read_error, max_connections = _reason(error), DEFAULT_MAX_CONNECTIONS
    budget = ConnectionBudget(workers=workers, pool_size=config["DB_POOL_SIZE"],
                              max_overflow=config["DB_MAX_OVERFLOW"], replicas=replicas + surge,
                              others=OTHER_CONNECTIONS, max_connections=max_connections)
    detail = budget.describe()
    if read_error:
        detail += f" (max_connections could not be read: {read_error}; assumed Postgres's default)"
    if not budget.fits:
        return Row(name, "fail", f"{detail}: lower WEB_CONCURRENCY, WEB_REPLICAS or DB_POOL_SIZE + "
                                 "DB_MAX_OVERFLOW, or raise Postgres's max_connections")
    return Row(name, "warn" if read_error else "pass", detail)


def check_migrations(target: Target) -> Row:
    """The database's alembic_version is the head of migrations/."""
    if not _has_database(target.settings):
        return Row("migrations", "skip", "DATABASE_URL is not set (see the secrets row)")
    upgrade = f"run `{COMPOSE} run --rm migrate` (flask --app wsgi db upgrade)"
    heads, known = migration_revisions()
    try:
        with _database(target) as connection:
            try:
                revisions = set(connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalars())
            except (ProgrammingError, OperationalError):  # no alembic_version (SQLite says Operational)
                revisions = set()
    except Exception as error:  # noqa: BLE001
        return Row("migrations", "fail", f"cannot read the database: {_reason(error)}: check DATABASE_URL "
                                         "and that db is up")
    at, head = ", ".join(sorted(revisions)) or "nothing", ", ".join(sorted(heads))
    state = schema_state(revisions, heads, known)
    if state == "head":
        return Row("migrations", "pass", f"at head {head}")
    if state == "unmigrated":
        return Row("migrations", "fail", f"the database was never migrated (head is {head}): {upgrade}")
    if state == "ahead":
        return Row("migrations", "warn", f"the database is at {at}, newer than this image's head {head}: "
                                         "expected after a rollback; otherwise deploy the release that has it")
    return Row("migrations", "fail", f"the database is at {at}, behind head {head}: {upgrade}")


# --- the live site ---------------------------------------------------------------------------

def check_readiness(target: Target) -> Row:
    """GET /health/ready answers 200 with status pass."""
    if not target.url:
        return _skip("readiness")
    try:
        status, _, body = _get(target, "/health/ready")
        report = json.loads(body)
    except (OSError, ValueError) as error:
        return Row("readiness", "fail", f"GET {target.url}/health/ready: {_reason(error)}: check "
                                        f"`{COMPOSE} ps` and `... logs nginx web`")
    failing = [f"{name} {entry[0].get('status')} ({entry[0].get('output', '')})"
               for name, entry in report.get("checks", {}).items() if entry[0].get("status") != "pass"]
    if status == 200 and report.get("status") == "pass":
        return Row("readiness", "pass", "/health/ready answers 200, status pass")
    detail = f"/health/ready answers {status}, status {report.get('status')}: {'; '.join(failing) or 'no checks'}"
    if status == 200 and report.get("status") == "warn":
        return Row("readiness", "warn", f"{detail}: see docs/resilience.md")
    return Row("readiness", "fail", f"{detail}: fix the failing dependency (`{COMPOSE} logs web db redis`)")


def check_tls(target: Target) -> Row:
    """TLS 1.2 and 1.3 accepted, 1.0 and 1.1 refused."""
    if not target.url:
        return _skip("tls")
    wrong, unprobed = [], []
    for version, name, accept in _protocols():
        try:
            outcome = probe_tls_version(target.host, target.port, version, target.timeout)
        except OSError as error:
            return Row("tls", "fail", f"cannot connect to {target.host}:{target.port}: {_reason(error)}")
        if outcome == "unprobed":
            unprobed.append(name)
        elif (outcome == "accepted") != accept:
            wrong.append(f"{name} {outcome}")
    if wrong:
        return Row("tls", "fail", f"{', '.join(wrong)}: set `ssl_protocols TLSv1.2 TLSv1.3;` "
                                  "(nginx/snippets/tls.conf) and reload nginx")
    if unprobed:
        return Row("tls", "warn", f"1.2 and 1.3 accepted; could not probe {', '.join(unprobed)}: this "
                                  "machine's OpenSSL cannot offer it (check with testssl.sh elsewhere)")
    return Row("tls", "pass", "TLS 1.2 and 1.3 accepted; 1.0 and 1.1 refused")


def probe_tls_version(host: str, port: int, version: ssl.TLSVersion, timeout: float = 5.0) -> str:
    """Whether the server completes a handshake at exactly `version`: accepted, refused, or
    unprobed (this OpenSSL could not offer it). Raises OSError when nothing answers at all.

    OpenSSL 3 refuses 1.0 and 1.1 at its default security level, so the probe drops to
    @SECLEVEL=0; where the build has them compiled out, the probe says so instead of guessing."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            context.minimum_version = context.maximum_version = version
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
        except (ValueError, ssl.SSLError):
            return "unprobed"
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        with context.wrap_socket(sock, server_hostname=host):
            return "accepted"
    except ssl.SSLError as error:
        return "unprobed" if error.reason in LOCAL_TLS_ERRORS else "refused"
    except (ConnectionResetError, TimeoutError):
        return "refused"
    finally:
        sock.close()


def check_certificate(target: Target) -> Row:
    """The certificate at the URL verifies and is not close to expiry."""
    if not target.url:
        return _skip("certificate")
    try:
        with _tls(target, target.context(), server_name=target.host) as tls:
            expires = ssl.cert_time_to_seconds(tls.getpeercert()["notAfter"])
    except ssl.SSLCertVerificationError as error:
        return Row("certificate", "fail", f"the certificate at {target.url} does not verify "
                                          f"({error.verify_message}): install one from a CA (docs/certificates.md)")
    except OSError as error:
        return Row("certificate", "fail", f"cannot reach {target.url}: {_reason(error)}")
    days = (expires - time.time()) / 86400
    detail = f"expires {datetime.fromtimestamp(expires, timezone.utc):%Y-%m-%d %H:%M} UTC ({days:.0f} days)"
    if days < CERT_FAIL_DAYS:
        return Row("certificate", "fail", f"{detail}: renew now with ./renew-certificates.sh, and check its "
                                          "schedule (docs/certificates.md)")
    if days < CERT_WARN_DAYS:
        return Row("certificate", "warn", f"{detail}: certbot renews at 30 days, so renewal is not running; "
                                          "check ./renew-certificates.sh's schedule (docs/certificates.md)")
    return Row("certificate", "pass", detail)


def check_headers(target: Target) -> Row:
    """The security headers nginx/snippets/security-headers.conf sends, on a real response."""
    if not target.url:
        return _skip("headers")
    try:
        _, headers, _ = _get(target, "/health")
    except OSError as error:
        return Row("headers", "fail", f"GET {target.url}/health: {_reason(error)}")
    problems = []
    hsts = headers.get("Strict-Transport-Security", "")
    age = re.search(r"max-age\s*=\s*\"?(\d+)", hsts)
    if not hsts:
        problems.append("Strict-Transport-Security missing")
    elif not age or int(age.group(1)) < HSTS_MIN_AGE:
        problems.append(f"Strict-Transport-Security max-age under a year ({hsts})")
    if headers.get("X-Content-Type-Options", "").lower() != "nosniff":
        problems.append("X-Content-Type-Options nosniff missing")
    if not headers.get("X-Frame-Options") and "frame-ancestors" not in headers.get("Content-Security-Policy", ""):
        problems.append("X-Frame-Options (or CSP frame-ancestors) missing")
    if not headers.get("Referrer-Policy"):
        problems.append("Referrer-Policy missing")
    if problems:
        return Row("headers", "fail", f"{'; '.join(problems)}: the HTTPS server must include "
                                      "snippets/security-headers.conf (and every location with its own add_header)")
    return Row("headers", "pass", "HSTS (1 year+), nosniff, frame denial and Referrer-Policy present")


def check_exposure(target: Target) -> Row:
    """/metrics is not served to the internet, and neither are Postgres and Redis."""
    if not target.url:
        return _skip("exposure")
    problems, notes = [], []
    try:
        status, _, _ = _get(target, "/metrics")
        if 200 <= status < 300:
            problems.append(f"{target.url}/metrics answers {status}: deny it in nginx (serve metrics on the "
                            "internal network only)")
        elif status not in (401, 403, 404):
            notes.append(f"/metrics answers {status}, not 403 or 404")
    except OSError as error:
        notes.append(f"/metrics not checked: {_reason(error)}")
    for service, port in (("Postgres", target.db_port), ("Redis", target.redis_port)):
        if _accepts(target.host, port, target.timeout):
            problems.append(f"{service} port {port} accepts connections on {target.host}: publish no ports "
                            "for db and redis (docker-compose.prod.yml) and firewall all but 22, 80, 443")
    if problems:
        return Row("exposure", "fail", "; ".join(problems + notes))
    if notes:
        return Row("exposure", "warn", "; ".join(notes))
    return Row("exposure", "pass", f"/metrics not served; ports {target.db_port} and {target.redis_port} "
                                   f"closed on {target.host}")


# --- the host --------------------------------------------------------------------------------

def check_backup(target: Target) -> Row:
    """The newest backup (scripts/backup.sh names it <db>-<UTC stamp>.dump) is recent."""
    directory = target.backup_dir
    if directory is None:
        return Row("backup", "warn", "not checked: pass --backup-dir (or BACKUP_DIR) with the backups in it")
    if not directory.is_dir():
        return Row("backup", "fail", f"{directory} is not a directory: pass the backups' directory")
    backups = [(path, _backup_time(path)) for pattern in ("*.dump", "*.sqlite3") for path in directory.glob(pattern)]
    if not backups:
        return Row("backup", "fail", f"no backup in {directory}: run scripts/backup.sh, and check the backup "
                                     f"schedule (`{COMPOSE} logs backup`)")
    path, taken = max(backups, key=lambda backup: backup[1])
    hours = max(0.0, (time.time() - taken) / 3600)
    detail = f"newest {path.name}, {hours:.0f} h old"
    if hours > BACKUP_FAIL_HOURS:
        return Row("backup", "fail", f"{detail}: two daily backups missed; check `{COMPOSE} logs backup` and "
                                     "run scripts/backup.sh now")
    if hours > BACKUP_WARN_HOURS:
        return Row("backup", "warn", f"{detail}: the daily backup is late; check `{COMPOSE} logs backup`")
    return Row("backup", "pass", detail)


def check_disk(target: Target) -> Row:
    """Free space where data and backups grow: the fail floor covers Postgres's WAL between
    checkpoints (max_wal_size, 1 GB by default), which it must be able to write or it stops."""
    paths = list(target.disk_paths)
    if not paths:
        # in the web container, / is the filesystem holding Docker's images and volumes
        paths = [target.backup_dir, Path("/")] if target.backup_dir else [Path("/")]
    seen, problems, warnings_, details = set(), [], [], []
    for path in paths:
        try:
            device = path.stat().st_dev
            usage = shutil.disk_usage(path)
        except OSError as error:
            problems.append(f"{path}: {_reason(error)}")
            continue
        if device in seen:
            continue
        seen.add(device)
        percent = 100 * usage.free / usage.total
        line = f"{path}: {usage.free / GIB:.1f} GiB free ({percent:.0f}%)"
        details.append(line)
        if percent < DISK_FAIL_PERCENT or usage.free < target.disk_fail_gib * GIB:
            problems.append(line)
        elif percent < DISK_WARN_PERCENT or usage.free < target.disk_warn_gib * GIB:
            warnings_.append(line)
    fix = "free space (`docker system prune`, old backups) or grow the disk"
    if problems:
        return Row("disk", "fail", f"{'; '.join(problems)}: {fix}")
    if warnings_:
        return Row("disk", "warn", f"{'; '.join(warnings_)}: {fix}")
    return Row("disk", "pass", "; ".join(details))


CHECKS: list[Callable[[Target], Row]] = [
    check_secrets, check_domain, check_tag, check_connection_budget, check_migrations, check_readiness,
    check_tls, check_certificate, check_headers, check_exposure, check_backup, check_disk,
]


def run_checks(target: Target) -> list[Row]:
    rows = []
    for check in CHECKS:
        try:
            rows.append(check(target))
        except Exception as error:  # noqa: BLE001 - one broken check must not hide the others
            name = check.__name__.removeprefix("check_").replace("_", " ")
            rows.append(Row(name, "fail", f"the check itself failed: {type(error).__name__}: {error}"))
    return rows


def render_table(rows: list[Row]) -> str:
    width = max(len(row.check) for row in rows)
    lines = [f"{row.check:<{width}}  {row.status:<4}  {row.detail}" for row in rows]
    counts = {status: sum(row.status == status for row in rows) for status in ("pass", "warn", "fail", "skip")}
    lines.append(", ".join(f"{count} {status}" for status, count in counts.items() if count))
    return "\n".join(lines)


def render_json(rows: list[Row]) -> str:
    return json.dumps([asdict(row) for row in rows], indent=2)


# --- helpers ---------------------------------------------------------------------------------

def _skip(check: str) -> Row:
    return Row(check, "skip", "needs the live site: pass --url https://$DOMAIN")


def _has_database(settings: Mapping[str, str]) -> bool:
    return bool(settings.get("DATABASE_URL") or settings.get("DATABASE_URL_FILE"))


def _int_setting(settings: Mapping[str, str], name: str, default: int) -> int:
    value = (settings.get(name) or "").strip()
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, not {value!r}") from None
    if number < 1:
        raise ConfigError(f"{name} must be at least 1, not {number}")
    return number


@contextmanager
def _database(target: Target) -> Iterator:
    """One connection to the deploy's database, bounded by the app's timeouts."""
    config = app_config(target.settings)
    uri = config["SQLALCHEMY_DATABASE_URI"]
    connect_args = {}
    if uri.startswith("postgresql"):
        connect_args = {"connect_timeout": config["DB_CONNECT_TIMEOUT"],
                        "options": f"-c statement_timeout={config['DB_STATEMENT_TIMEOUT_MS']}"}
    engine = create_engine(uri, poolclass=NullPool, connect_args=connect_args)
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


def _tls(target: Target, context: ssl.SSLContext, server_name: str) -> ssl.SSLSocket:
    sock = socket.create_connection((target.host, target.port), timeout=target.timeout)
    try:
        return context.wrap_socket(sock, server_hostname=server_name)
    except BaseException:
        sock.close()
        raise


def _get(target: Target, path: str) -> tuple[int, Mapping[str, str], bytes]:
    """One GET through the URL's host, verifying its certificate; HTTP-level errors as OSError."""
    connection = http.client.HTTPSConnection(target.host, target.port, timeout=target.timeout,
                                             context=target.context())
    try:
        connection.request("GET", path, headers={"User-Agent": "flask-kit-doctor"})
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    except http.client.HTTPException as error:
        raise ConnectionError(f"not an HTTP answer ({type(error).__name__})") from error
    finally:
        connection.close()


def _accepts(host: str, port: int, timeout: float) -> bool:
    """A TCP connect succeeds on any of the host's addresses."""
    try:
        addresses = {info[4][:2] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)}
    except OSError:
        return False
    for address in addresses:
        try:
            with socket.create_connection(address, timeout=timeout):
                return True
        except OSError:
            continue
    return False


def _backup_time(path: Path) -> float:
    """When the backup was taken: the UTC stamp in its name, else its modification time."""
    match = BACKUP_STAMP.search(path.name)
    if match:
        return datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc).timestamp()
    return path.stat().st_mtime


def _protocols() -> list[tuple[ssl.TLSVersion, str, bool]]:
    """Each version, its name, and whether a server should accept it."""
    with warnings.catch_warnings():
        # the deprecated versions are exactly what the probe is for
        warnings.simplefilter("ignore", DeprecationWarning)
        return [(ssl.TLSVersion.TLSv1, "TLS 1.0", False), (ssl.TLSVersion.TLSv1_1, "TLS 1.1", False),
                (ssl.TLSVersion.TLSv1_2, "TLS 1.2", True), (ssl.TLSVersion.TLSv1_3, "TLS 1.3", True)]


def _reason(error: BaseException) -> str:
    if isinstance(error, ssl.SSLError) and error.reason:
        return error.reason.lower().replace("_", " ")
    orig = getattr(error, "orig", None)  # SQLAlchemy wraps the driver's error
    text = str(orig or error).strip().splitlines()
    return text[0] if text else type(error).__name__


# --- the command: `flask --app wsgi doctor` (app/cli.py) and `python -m app.doctor` ----------

def _https_url(ctx, param, value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname:
        raise click.BadParameter("must be https://host[:port]")
    return f"https://{parts.netloc}"


@click.command("doctor")
@click.option("--env-file", type=click.File("r"),
              help="The deploy's Compose .env (REGISTRY, TAG, DOMAIN, WEB_REPLICAS, secrets); - reads stdin. "
                   "The environment wins where both set a variable.")
@click.option("--url", callback=_https_url, help="The live site, https://host[:port]; without it the "
                                                 "live-site rows are skipped.")
@click.option("--cafile", type=click.Path(exists=True, dir_okay=False),
              help="Trust only this CA bundle for --url (a test or private CA).")
@click.option("--allow-localhost", is_flag=True, help="Accept DOMAIN=localhost (a loopback test deploy).")
@click.option("--db-port", type=int, default=5432, show_default=True,
              help="Postgres's port, which must be closed on --url's host.")
@click.option("--redis-port", type=int, default=6379, show_default=True,
              help="Redis's port, which must be closed on --url's host.")
@click.option("--backup-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where the backups are. Default: BACKUP_DIR.")
@click.option("--disk-path", "disk_paths", multiple=True, type=click.Path(path_type=Path),
              help="A filesystem to check for free space (repeatable). Default: the backup dir and /.")
@click.option("--disk-warn-gib", type=float, default=2.0, show_default=True,
              help="Warn under this much free space (or under 10%).")
@click.option("--disk-fail-gib", type=float, default=1.0, show_default=True,
              help="Fail under this much free space (or under 5%).")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as a JSON list (for CI).")
def command(env_file, url, cafile, allow_localhost, db_port, redis_port, backup_dir, disk_paths,
            disk_warn_gib, disk_fail_gib, as_json):
    """Check a production deploy: print pass, warn, fail and skip rows; exit 1 on any fail."""
    settings = settings_from(os.environ, env_file.read() if env_file else None)
    if backup_dir is None and settings.get("BACKUP_DIR"):
        backup_dir = Path(settings["BACKUP_DIR"])
    target = Target(
        settings=settings, deploy_env=env_file is not None, url=url, cafile=cafile,
        allow_localhost=allow_localhost, db_port=db_port, redis_port=redis_port, backup_dir=backup_dir,
        disk_paths=tuple(disk_paths), disk_warn_gib=disk_warn_gib, disk_fail_gib=disk_fail_gib,
    )
    rows = run_checks(target)
    click.echo(render_json(rows) if as_json else render_table(rows))
    if any(row.status == "fail" for row in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    command()
