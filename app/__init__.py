"""The application factory: the only place an app is built."""

from __future__ import annotations

from collections.abc import Mapping

from flask import Flask

from .config import load_config


def create_app(environ: Mapping[str, str] | None = None) -> Flask:
    """Build the app from `environ` (default: the process environment)."""
    # Imported here, as Flask's tutorial does: Gunicorn's master imports app.config, app.jsonlog
    # and app.metrics before gevent has patched the workers, and must not pull in the rest.
    from . import (
        api,
        cli,
        datastores,
        errors,
        health,
        json_provider,
        limits,
        logs,
        metrics,
        middleware,
        passwords,
        sentry,
        sessions,
    )

    app = Flask(__name__, instance_relative_config=True)
    app.config.from_mapping(load_config(environ, instance_path=app.instance_path))
    json_provider.init_app(app)
    logs.init_app(app)
    sentry.init_app(app)
    datastores.init_app(app)
    sessions.init_app(app)
    passwords.init_app(app)
    limits.init_app(app)
    health.init_app(app)  # before middleware: its liveness answer sits inside the request id
    middleware.init_app(app)
    api.init_app(app)
    errors.init_app(app)
    cli.init_app(app)
    metrics.init_app(app)  # last: outermost, it times every answer and serves the scrapes
    return app
