"""Operator commands, run as `flask --app wsgi <command>`."""

import json
import os
from pathlib import Path
from urllib.parse import urlsplit

import click
from flask import Flask, current_app


@click.command("ready")
def ready_command():
    """Print the readiness report; exit 1 unless the instance is ready (for scripts and probes)."""
    report = current_app.extensions["readiness"].report()
    click.echo(json.dumps(report, indent=2))
    if report["status"] == "fail":
        raise SystemExit(1)


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
def doctor_command(env_file, url, cafile, allow_localhost, db_port, redis_port, backup_dir, disk_paths,
                   disk_warn_gib, disk_fail_gib, as_json):
    """Check a production deploy: print pass, warn, fail and skip rows; exit 1 on any fail."""
    from . import doctor  # only here: workers never pay for its imports

    settings = doctor.settings_from(os.environ, env_file.read() if env_file else None)
    if backup_dir is None and settings.get("BACKUP_DIR"):
        backup_dir = Path(settings["BACKUP_DIR"])
    target = doctor.Target(
        settings=settings, deploy_env=env_file is not None, url=url, cafile=cafile,
        allow_localhost=allow_localhost, db_port=db_port, redis_port=redis_port, backup_dir=backup_dir,
        disk_paths=tuple(disk_paths), disk_warn_gib=disk_warn_gib, disk_fail_gib=disk_fail_gib,
    )
    rows = doctor.run_checks(target)
    click.echo(doctor.render_json(rows) if as_json else doctor.render_table(rows))
    if any(row.status == "fail" for row in rows):
        raise SystemExit(1)


def init_app(app: Flask) -> None:
    app.cli.add_command(ready_command)
    app.cli.add_command(doctor_command)
