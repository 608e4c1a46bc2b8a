"""Bring a test database to the migration head, the way `flask db upgrade` does."""

from flask_migrate import upgrade

from app import create_app
from app.extensions import db


def migrate_to_head(database_url: str) -> None:
    app = create_app({"APP_ENV": "testing", "DATABASE_URL": database_url})
    with app.app_context():
        upgrade()
        db.engine.dispose()
