"""Operator commands, run as `flask --app wsgi <command>`."""

import json

import click
from flask import Flask, current_app


@click.command("ready")
def ready_command():
    """Print the readiness report; exit 1 unless the instance is ready (for scripts and probes)."""
    report = current_app.extensions["readiness"].report()
    click.echo(json.dumps(report, indent=2))
    if report["status"] == "fail":
        raise SystemExit(1)


def init_app(app: Flask) -> None:
    app.cli.add_command(ready_command)
