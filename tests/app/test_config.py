"""The one config module (app/config.py): what production refuses, secrets from files, and
development's embedded run with no servers."""

import pytest

from app.config import DEVELOPMENT_SECRET_KEY, ConfigError, load_config

STRONG_KEY = "k3Vq9x-2LrT8pZ0wYb6NcJ4hFm1sUe7aGd5QoXiR"
PRODUCTION = {
    "APP_ENV": "production",
    "SECRET_KEY": STRONG_KEY,
    "DATABASE_URL": "postgresql://kit:pw@db:5432/kit",
    "REDIS_URL": "redis://:pw@redis:6379/0",
}


def test_production_with_everything_set_loads():
    config = load_config(PRODUCTION)

    assert config["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg2://kit:pw@db:5432/kit"
    assert config["SESSION_COOKIE_SECURE"] and config["SESSION_COOKIE_HTTPONLY"]
    assert config["SESSION_COOKIE_SAMESITE"] == "Lax"
    assert config["MAX_CONTENT_LENGTH"] == 1024 * 1024
    assert config["SENTRY_TRACES_SAMPLE_RATE"] == 0.0


@pytest.mark.parametrize("change, named", [
    ({"SECRET_KEY": ""}, "SECRET_KEY is missing"),
    ({"SECRET_KEY": "short-but-random-Zq8"}, "SECRET_KEY is too short"),
    ({"SECRET_KEY": "!!!SET SECRET_KEY!!! in production, long enough"}, "SECRET_KEY is a placeholder"),
    ({"SECRET_KEY": DEVELOPMENT_SECRET_KEY}, "SECRET_KEY is a placeholder"),
    ({"DATABASE_URL": ""}, "DATABASE_URL is missing"),
    ({"DATABASE_URL": "sqlite:///prod.db"}, "DATABASE_URL points at SQLite"),
    ({"REDIS_URL": ""}, "REDIS_URL is missing"),
    ({"FLASK_DEBUG": "1"}, "FLASK_DEBUG is on"),
    ({"APP_ENV": "prod"}, "APP_ENV must be one of"),
    ({"DB_POOL_SIZE": "ten"}, "DB_POOL_SIZE must be an integer"),
    ({"SECRET_KEY": " " * 32}, "SECRET_KEY is too short"),
    ({"SECRET_KEY": "  " + STRONG_KEY[:30] + "  "}, "SECRET_KEY is too short"),
    ({"SECRET_KEY": "ab" * 24}, "SECRET_KEY has fewer than 10 distinct characters"),
    ({"SECRET_KEY": "123456789" * 4}, "SECRET_KEY has fewer than 10 distinct characters"),
    ({"DATABASE_URL": "mysql://kit:pw@db/kit"}, "DATABASE_URL has the unsupported scheme 'mysql': use postgresql://"),
    ({"DATABASE_URL": "postgresql+psycopg://kit:pw@db/kit"}, "unsupported scheme 'postgresql\\+psycopg'"),
])
def test_production_refuses_unsafe_settings(change, named):
    with pytest.raises(ConfigError, match=named) as caught:
        load_config({**PRODUCTION, **change})

    assert "\n" not in str(caught.value)


def test_flask_env_is_an_alias_for_app_env():
    environ = {key: value for key, value in PRODUCTION.items() if key != "APP_ENV"}

    with pytest.raises(ConfigError, match="SECRET_KEY is too short"):
        load_config({**environ, "FLASK_ENV": "production", "SECRET_KEY": "weak"})


def test_secrets_can_come_from_files(tmp_path):
    key_file = tmp_path / "secret_key"
    key_file.write_text(STRONG_KEY + "\n")
    environ = {**PRODUCTION, "SECRET_KEY": "", "SECRET_KEY_FILE": str(key_file)}

    assert load_config(environ)["SECRET_KEY"] == STRONG_KEY


@pytest.mark.parametrize("change, named", [
    ({"SECRET_KEY_FILE": "/nonexistent/secret"}, "SECRET_KEY_FILE=/nonexistent/secret cannot be read"),
    ({"SECRET_KEY_FILE": "/dev/null"}, "SECRET_KEY_FILE=/dev/null is empty"),
])
def test_unreadable_secret_files_are_named(change, named):
    with pytest.raises(ConfigError, match=named):
        load_config({**PRODUCTION, "SECRET_KEY": "", **change})


def test_a_secret_set_twice_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="set SECRET_KEY or SECRET_KEY_FILE, not both"):
        load_config({**PRODUCTION, "SECRET_KEY_FILE": "/dev/null"})


def test_development_runs_embedded_with_no_servers(tmp_path):
    config = load_config({}, instance_path=tmp_path)

    assert config["APP_ENV"] == "development"
    assert config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path / 'app.sqlite'}"
    assert config["REDIS_URL"] is None
    assert config["SESSION_COOKIE_SECURE"] is False


def test_dotenv_is_read_in_development_only(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("LOG_LEVEL=debug\nREDIS_URL=redis://from-dotenv:6379/0\n")
    monkeypatch.chdir(tmp_path)

    assert load_config({"LOG_LEVEL": "warning"})["LOG_LEVEL"] == "WARNING"  # the environment wins
    assert load_config({})["REDIS_URL"] == "redis://from-dotenv:6379/0"
    with pytest.raises(ConfigError, match="REDIS_URL is missing"):
        load_config({**PRODUCTION, "REDIS_URL": ""})


def test_testing_needs_a_database():
    with pytest.raises(ConfigError, match="DATABASE_URL is required"):
        load_config({"APP_ENV": "testing"})
