"""The one place the environment is read.

Everything is read when `load_config()` is called (by the app factory), never at import time.
Required production values have no defaults; problems raise `ConfigError` with one line that
names the variable, so the process can exit with that line and nothing else.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values

ENVIRONMENTS = ("development", "testing", "production")
MIN_SECRET_KEY_LENGTH = 32
# A random key of 32+ characters has far more; 32 spaces or "abab..." have far fewer.
MIN_SECRET_KEY_DISTINCT_CHARACTERS = 10
DATABASE_SCHEMES = ("postgresql://", "postgres://", "postgresql+psycopg2://", "sqlite://")
# Values copied from samples and tutorials; a production key must never be one of them.
PLACEHOLDER_MARKERS = ("change", "secret", "placeholder", "example", "dev-only", "insecure", "!!!")
DEVELOPMENT_SECRET_KEY = "dev-only-insecure-secret-key-do-not-use-in-production"


# Gunicorn's exit code for "the app failed to load": the master stops instead of respawning
# workers that can never boot.
APP_LOAD_ERROR = 4


class ConfigError(RuntimeError):
    """A configuration problem, phrased as one line that names the variable to fix."""


def load_config(environ: Mapping[str, str] | None = None, instance_path: str | Path = "instance") -> dict:
    """Build the Flask config mapping from the environment (plus `.env` in development only)."""
    environ = dict(os.environ if environ is None else environ)
    # FLASK_ENV (removed from Flask 2.3) is still honoured, so an old habit cannot start
    # production with development's defaults
    app_env = environ.get("APP_ENV") or environ.get("FLASK_ENV") or "development"
    if app_env not in ENVIRONMENTS:
        raise ConfigError(f"APP_ENV must be one of {', '.join(ENVIRONMENTS)}, not {app_env!r}")
    if app_env == "development":
        # the real environment wins over the file
        environ = {**dotenv_values(Path.cwd() / ".env"), **environ}
    env = _Reader(environ)

    config = {
        "APP_ENV": app_env,
        "TESTING": app_env == "testing",
        "DEBUG": env.flag("FLASK_DEBUG", False),
        # unexpected errors answer with the JSON 500 in every environment, tests included;
        # the traceback goes to the log
        "PROPAGATE_EXCEPTIONS": False,
        "SECRET_KEY": env.secret("SECRET_KEY") or (DEVELOPMENT_SECRET_KEY if app_env != "production" else None),
        "SQLALCHEMY_DATABASE_URI": with_psycopg2_driver(env.secret("DATABASE_URL")),
        "REDIS_URL": env.secret("REDIS_URL"),
        "SENTRY_DSN": env.secret("SENTRY_DSN"),
        "SENTRY_ENVIRONMENT": env.str("SENTRY_ENVIRONMENT", app_env),
        "SENTRY_TRACES_SAMPLE_RATE": env.float("SENTRY_TRACES_SAMPLE_RATE", 0.0),
        # the share of unexpected errors sent to Sentry (1.0: every one); lower it only if a
        # flood of one bug eats the quota
        "SENTRY_SAMPLE_RATE": env.float("SENTRY_SAMPLE_RATE", 1.0),
        # Prometheus metrics (app/metrics.py): Gunicorn listens on this port too, beside its
        # public bind, and answers only /metrics there; nginx never proxies it. 0: no metrics
        # listener. Default: 9464 (the port OpenTelemetry's Prometheus exporters use).
        "METRICS_PORT": env.int("METRICS_PORT", 9464),
        # the git SHA, baked into the image by the build (ARG GIT_SHA)
        "APP_RELEASE": env.str("APP_RELEASE", None),
        "LOG_LEVEL": env.str("LOG_LEVEL", "INFO").upper(),
        # nginx's client_max_body_size must match: 1 MiB
        "MAX_CONTENT_LENGTH": env.int("MAX_CONTENT_LENGTH", 1024 * 1024),
        # how many proxies sit in front of the app; 0 trusts no X-Forwarded-* header at all
        "PROXY_FIX_HOPS": env.int("PROXY_FIX_HOPS", 0),
        "HEALTH_CHECK_TIMEOUT": env.float("HEALTH_CHECK_TIMEOUT", 1.0),
        "HEALTH_CACHE_TTL": env.float("HEALTH_CACHE_TTL", 1.0),
        "RETRY_AFTER_SECONDS": env.int("RETRY_AFTER_SECONDS", 5),
        # All of a worker's connections stay pooled: an overflow connection is closed when it
        # comes back, so under load Postgres forks a backend for nearly every request beyond
        # the pool (docs/benchmarks.md: 20 + 0 served 20% more reads than 10 + 10).
        "DB_POOL_SIZE": env.int("DB_POOL_SIZE", 20),
        "DB_MAX_OVERFLOW": env.int("DB_MAX_OVERFLOW", 0),
        "DB_POOL_TIMEOUT": env.float("DB_POOL_TIMEOUT", 5.0),
        "DB_CONNECT_TIMEOUT": env.int("DB_CONNECT_TIMEOUT", 3),
        "DB_STATEMENT_TIMEOUT_MS": env.int("DB_STATEMENT_TIMEOUT_MS", 5_000),
        # all of one request's waits on Postgres together; under nginx's proxy_read_timeout (35 s)
        "DB_REQUEST_TIMEOUT": env.float("DB_REQUEST_TIMEOUT", 10.0),
        "REDIS_TIMEOUT": env.float("REDIS_TIMEOUT", 1.0),
        "REDIS_RETRIES": env.int("REDIS_RETRIES", 2),
        "REDIS_HEALTH_CHECK_INTERVAL": env.int("REDIS_HEALTH_CHECK_INTERVAL", 30),
        "SESSION_LIFETIME_SECONDS": env.int("SESSION_LIFETIME_SECONDS", 14 * 24 * 3600),
        # an unchanged session's expiry is pushed back (one write) at most this often
        "SESSION_REFRESH_SECONDS": env.int("SESSION_REFRESH_SECONDS", 3600),
        # Flask-Session then writes changed sessions only; the interval above slides the rest
        "SESSION_REFRESH_EACH_REQUEST": False,
        "LOGIN_FAILURES_PER_ACCOUNT": env.int("LOGIN_FAILURES_PER_ACCOUNT", 10),
        "LOGIN_FAILURES_PER_ADDRESS": env.int("LOGIN_FAILURES_PER_ADDRESS", 50),
        "LOGIN_FAILURE_WINDOW_SECONDS": env.int("LOGIN_FAILURE_WINDOW_SECONDS", 900),
        # Notes one user may create per minute, then 429 with Retry-After. nginx limits each address
        # (10 requests/s) but cannot see users; this is that rate per user, from any number of addresses.
        "NOTES_PER_USER_PER_MINUTE": env.int("NOTES_PER_USER_PER_MINUTE", 600),
        "PASSWORD_HASH_CONCURRENCY": env.int("PASSWORD_HASH_CONCURRENCY", 1),
        "PASSWORD_HASH_QUEUE_SECONDS": env.float("PASSWORD_HASH_QUEUE_SECONDS", 5.0),
        "IDEMPOTENCY_KEY_TTL_SECONDS": env.int("IDEMPOTENCY_KEY_TTL_SECONDS", 24 * 3600),
        "SESSION_COOKIE_SECURE": env.flag("SESSION_COOKIE_SECURE", app_env == "production"),
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
    }
    if not config["SQLALCHEMY_DATABASE_URI"] and app_env == "development":
        # the embedded default: runs with no database server at all
        config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{Path(instance_path).resolve() / 'app.sqlite'}"
    if app_env == "production":
        _refuse_unsafe_production(config)
    elif not config["SQLALCHEMY_DATABASE_URI"]:
        raise ConfigError(f"DATABASE_URL is required when APP_ENV={app_env}")
    if not config["SQLALCHEMY_DATABASE_URI"].startswith(DATABASE_SCHEMES):
        scheme = config["SQLALCHEMY_DATABASE_URI"].split(":", 1)[0]
        raise ConfigError(f"DATABASE_URL has the unsupported scheme {scheme!r}: use postgresql:// "
                          "(or sqlite:// outside production)")
    return config


def with_psycopg2_driver(url: str | None) -> str | None:
    """SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; this service ships psycopg2."""
    if url and url.startswith(("postgres://", "postgresql://")):
        return "postgresql+psycopg2://" + url.split("://", 1)[1]
    return url


def _refuse_unsafe_production(config: dict) -> None:
    key = config["SECRET_KEY"]
    if not key:
        raise ConfigError("SECRET_KEY is missing: set SECRET_KEY or SECRET_KEY_FILE")
    if len(key.strip()) < MIN_SECRET_KEY_LENGTH:
        raise ConfigError(f"SECRET_KEY is too short: use at least {MIN_SECRET_KEY_LENGTH} random characters "
                          "(python -c 'import secrets; print(secrets.token_urlsafe(48))')")
    if any(marker in key.lower() for marker in PLACEHOLDER_MARKERS):
        raise ConfigError("SECRET_KEY is a placeholder value: generate a random one")
    if len(set(key)) < MIN_SECRET_KEY_DISTINCT_CHARACTERS:
        raise ConfigError(f"SECRET_KEY has fewer than {MIN_SECRET_KEY_DISTINCT_CHARACTERS} distinct characters, "
                          "so it is not random: generate one (python -c 'import secrets; "
                          "print(secrets.token_urlsafe(48))')")
    database_url = config["SQLALCHEMY_DATABASE_URI"]
    if not database_url:
        raise ConfigError("DATABASE_URL is missing: set DATABASE_URL or DATABASE_URL_FILE")
    if database_url.startswith("sqlite"):
        raise ConfigError("DATABASE_URL points at SQLite: production needs PostgreSQL")
    if not config["REDIS_URL"]:
        raise ConfigError("REDIS_URL is missing: set REDIS_URL or REDIS_URL_FILE")
    if config["DEBUG"]:
        raise ConfigError("FLASK_DEBUG is on: debug mode must be off in production")


class _Reader:
    """Typed access to one environment mapping; every error names its variable."""

    def __init__(self, environ: Mapping[str, str]):
        self.environ = environ

    def str(self, name: str, default: str | None) -> str | None:
        value = self.environ.get(name, "")
        return value if value != "" else default

    def int(self, name: str, default: int) -> int:
        value = self.str(name, None)
        if value is None:
            return default
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{name} must be an integer, not {value!r}") from None

    def float(self, name: str, default: float) -> float:
        value = self.str(name, None)
        if value is None:
            return default
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{name} must be a number, not {value!r}") from None

    def flag(self, name: str, default: bool) -> bool:
        value = self.str(name, None)
        if value is None:
            return default
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name} must be true or false, not {value!r}")

    def secret(self, name: str) -> str | None:
        """NAME, or the contents of the file NAME_FILE points to (Docker secrets)."""
        path = self.str(f"{name}_FILE", None)
        if path is None:
            return self.str(name, None)
        if self.str(name, None) is not None:
            raise ConfigError(f"set {name} or {name}_FILE, not both")
        try:
            value = Path(path).read_text().strip()
        except OSError as error:
            raise ConfigError(f"{name}_FILE={path} cannot be read: {error.strerror}") from None
        if not value:
            raise ConfigError(f"{name}_FILE={path} is empty")
        return value
