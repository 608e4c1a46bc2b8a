"""Migrations against real PostgreSQL: they match the models, reverse cleanly, and serialize."""

import os
import subprocess
import sys
import uuid

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect, text

from app import create_app
from app.extensions import db
from harness import REPO


@pytest.fixture
def empty_database(postgres_server):
    name = f"empty_{uuid.uuid4().hex[:12]}"
    url = postgres_server.create_database(name)
    yield url
    postgres_server.drop_database(name)


def head_revision(app) -> str:
    return next(iter(app.extensions["readiness"].migration_heads))


def test_models_and_migrations_agree(app):
    with app.app_context(), db.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}), db.metadata)

    assert differences == []


def test_upgrade_downgrade_upgrade(empty_database):
    app = create_app({"APP_ENV": "testing", "DATABASE_URL": empty_database})
    with app.app_context():
        upgrade()
        assert {"users", "notes", "alembic_version"} <= set(inspect(db.engine).get_table_names())
        downgrade(revision="base")
        assert set(inspect(db.engine).get_table_names()) == {"alembic_version"}
        upgrade()
        with db.engine.connect() as connection:
            version = connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        assert version == head_revision(app)
        db.engine.dispose()


def test_concurrent_upgrades_serialize_on_the_advisory_lock(empty_database):
    """Three replicas or CI jobs running `flask db upgrade` at once all succeed."""
    env = {**os.environ, "APP_ENV": "testing", "DATABASE_URL": empty_database}
    flask = [sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"]
    runs = [subprocess.Popen(flask, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for _ in range(3)]
    outputs = [run.communicate(timeout=120)[0] for run in runs]

    assert [run.returncode for run in runs] == [0, 0, 0], outputs
    assert sum("Running upgrade" in output for output in outputs) == 1
    app = create_app({"APP_ENV": "testing", "DATABASE_URL": empty_database})
    with app.app_context(), db.engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == head_revision(app)
    with app.app_context():
        db.engine.dispose()


def test_upgrading_a_database_a_newer_release_migrated_is_a_no_op(database_url):
    """Redeploying (or rolling back to) an older release runs its `db upgrade` on a schema that a
    newer release expanded: nothing to do, and no error that would stop the deploy."""
    app = create_app({"APP_ENV": "testing", "DATABASE_URL": database_url})
    with app.app_context():
        with db.engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = 'from_a_newer_release'"))
        upgrade()
        with db.engine.connect() as connection:
            assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == \
                "from_a_newer_release"
        with pytest.raises(SystemExit):  # Flask-Migrate's exit after "Can't locate revision ..."
            downgrade(revision="-1")
        db.engine.dispose()
