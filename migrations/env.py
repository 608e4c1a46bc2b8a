"""Alembic environment, run by `flask --app wsgi db ...` (Flask-Migrate).

Migrations are a one-off deploy step. Several replicas or CI jobs may still start one at the
same time, so on PostgreSQL the run holds an advisory lock: concurrent runs queue behind it,
then find the schema already at head and do nothing.
"""

import logging

from alembic import context
from flask import current_app
from sqlalchemy import text

log = logging.getLogger("alembic.env")

# Any constant works, as long as every migration run uses the same one.
MIGRATION_LOCK_ID = 7_245_119_603
MIGRATION_LOCK_TIMEOUT = "5s"

config = context.config
migrate_extension = current_app.extensions["migrate"]
database = migrate_extension.db
config.set_main_option("sqlalchemy.url", database.engine.url.render_as_string(hide_password=False).replace("%", "%%"))
target_metadata = database.metadata


def skip_empty_autogenerate(context, revision, directives):
    """`flask db migrate` with no model change writes no empty revision file."""
    if getattr(config.cmd_opts, "autogenerate", False) and directives[0].upgrade_ops.is_empty():
        directives[:] = []
        log.info("No changes in schema detected.")


def database_is_ahead() -> bool:
    """An upgrade to head finds the database at a revision this release does not know: a newer
    release migrated it first (expand and contract, docs/deploy.md). That is this release's
    head already, as far as it can tell: nothing to do, rather than an error that would stop a
    redeploy or a rollback. Any other command (a downgrade) still fails on it."""
    target = context.get_revision_argument()  # "head" comes resolved to the head revision(s)
    if set(target if isinstance(target, tuple) else [target]) != set(context.script.get_heads()):
        return False
    known = {script.revision for script in context.script.walk_revisions()}
    unknown = set(context.get_context().get_current_heads()) - known
    if unknown:
        log.info("The database is at %s, newer than this release's migrations: nothing to upgrade.",
                 ", ".join(sorted(unknown)))
    return bool(unknown)


def run_migrations_offline():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    options = {"process_revision_directives": skip_empty_autogenerate, "compare_type": True,
               **migrate_extension.configure_args}
    with database.engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, **options)
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                # The app's statement_timeout is for requests: a migration may build an index
                # for minutes, and a concurrent run may wait that long for the lock below.
                connection.execute(text("SET LOCAL statement_timeout = 0"))
                # released at commit or rollback, so a crashed run cannot leave it held
                connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
                # A migration that waits for a busy table queues every query on that table
                # behind it: give up after a few seconds instead, and let the deploy retry.
                connection.execute(text(f"SET LOCAL lock_timeout = '{MIGRATION_LOCK_TIMEOUT}'"))
            if database_is_ahead():
                return
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
