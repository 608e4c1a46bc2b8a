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


@click.command("doctor", add_help_option=False,
               context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def doctor_command(ctx):
    """Check a production deploy: print pass, warn, fail and skip rows; exit 1 on any fail."""
    from .doctor import command  # only here: workers never pay for its imports

    command.main(ctx.args, prog_name=ctx.command_path)


def init_app(app: Flask) -> None:
    app.cli.add_command(ready_command)
    app.cli.add_command(doctor_command)
