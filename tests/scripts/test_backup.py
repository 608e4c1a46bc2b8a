"""scripts/backup.sh, restore.sh and backup-schedule.sh against real Postgres and SQLite: data
made through the API survives backup, wipe and restore unchanged; damaged backups and non-empty
targets are refused before anything is touched; retention keeps the right files; the schedule
stops on SIGTERM, and its healthcheck and metrics tell the newest backup's age; restic holds an
off-host copy; no password reaches argv or the output."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import sqlite3
import stat
import subprocess
import threading
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote

import psycopg2
import pytest
from alembic.script import ScriptDirectory
from flask_migrate import upgrade

from app import create_app
from app.extensions import db
from harness import REPO
from harness.process import child_pids, find_binary, process_state, stop_process
from harness.servers import PostgresServer, migrate_to_head
from harness.wait import wait_for, wait_for_line

pytestmark = pytest.mark.slow

SCRIPTS = REPO / "scripts"
MIGRATIONS = ScriptDirectory(str(REPO / "migrations"))
HEAD = MIGRATIONS.get_current_head()
BACKUP_NAME = re.compile(r"^(?P<name>.+)-(?P<stamp>\d{8}T\d{6}Z)\.(dump|sqlite3)$")
NOTES = [("Groceries", "milk, eggs"), ("Zürich ☃", "Grüße aus der Schweiz"), ("東京", "こんにちは 🌸"),
         ("quotes", "it's \"quoted\", with a comma\nand a newline"), ("empty body", "")]


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """A script with only the caller's backup settings: none leak in from the developer's shell."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("DATABASE_URL", "BACKUP_", "RESTIC_", "MIGRATION_HEAD", "PG"))}
    return subprocess.run([str(SCRIPTS / args[0]), *args[1:]], env={**base, **(env or {})}, capture_output=True,
                          text=True, timeout=timeout)


def backup(database_url: str, backup_dir: Path, **env: str) -> Path:
    result = run("backup.sh", env={"DATABASE_URL": database_url, "BACKUP_DIR": str(backup_dir), **env})
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.splitlines()[-1])
    assert path.parent == backup_dir
    return path


def restore(database_url: str, path: Path, *flags: str, **env: str) -> subprocess.CompletedProcess:
    return run("restore.sh", *flags, str(path), env={"DATABASE_URL": database_url, "MIGRATION_HEAD": HEAD, **env})


def table_digests(database_url: str) -> dict[str, str]:
    """md5 of each public table's rows, in a fixed order: equal digests, equal contents."""
    with psycopg2.connect(database_url) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")
        digests = {}
        for (table,) in cursor.fetchall():
            cursor.execute(f'SELECT count(*), md5(string_agg(t::text, \',\' ORDER BY t::text)) FROM public."{table}" t')
            digests[table] = cursor.fetchone()
    connection.close()
    return digests


def sqlite_digests(path: Path) -> dict[str, tuple]:
    with sqlite3.connect(path) as connection:
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        digests = {table: hashlib.md5(repr(sorted(map(repr, connection.execute(f'SELECT * FROM "{table}"'))))
                                      .encode()).hexdigest() for table in tables}
    connection.close()
    return digests


def database_name(database_url: str) -> str:
    return database_url.rsplit("/", 1)[1]


def wipe(postgres_server: PostgresServer, database_url: str) -> None:
    """Drop the database and create it again, empty."""
    name = database_name(database_url)
    postgres_server.drop_database(name)
    postgres_server.psql(f'CREATE DATABASE "{name}"')


def fill_through_the_api(client, auth) -> None:
    auth.register_and_login()
    for number, (title, body) in enumerate(NOTES):
        headers = {"Idempotency-Key": f"note-{number}"} if number % 2 else {}
        assert client.post("/api/notes", json={"title": title, "body": body}, headers=headers).status_code == 201
    other = client.application.test_client()
    assert other.post("/api/auth/register", json={"email": "grace@example.com",
                                                  "password": "another horse battery"}).status_code == 201


# --- Postgres: round trip, refusals ------------------------------------------------------

def test_backup_wipe_restore_gives_back_identical_data(app, client, auth, database_url, postgres_server, tmp_path):
    fill_through_the_api(client, auth)
    before = table_digests(database_url)
    assert before["notes"][0] == len(NOTES) and before["users"][0] == 2 and before["idempotency_keys"][0] == 2

    backup_dir = tmp_path / "backups"
    path = backup(database_url, backup_dir)
    match = BACKUP_NAME.match(path.name)
    assert match and match["name"] == database_name(database_url) and path.suffix == ".dump"
    assert stat.S_IMODE(backup_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not list(backup_dir.glob("*.partial"))
    check = subprocess.run(["sha256sum", "--check", path.name + ".sha256"], cwd=backup_dir,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr

    wipe(postgres_server, database_url)
    assert table_digests(database_url) == {}
    # no MIGRATION_HEAD: the head comes from this checkout's `flask db heads`, as natively
    result = run("restore.sh", str(path), env={"DATABASE_URL": database_url})
    assert result.returncode == 0, result.stderr
    assert table_digests(database_url) == before
    assert f"notes: {len(NOTES)} rows" in result.stdout.splitlines()
    assert "users: 2 rows" in result.stdout.splitlines()
    assert f"at the migration head {HEAD}" in result.stderr

    # the app serves the restored rows (its old connections died with the wiped database)
    with app.app_context():
        db.engine.dispose()
    listed = client.get("/api/notes?per_page=100").get_json()
    assert sorted((note["title"], note["body"]) for note in listed["items"]) == sorted(NOTES)


def test_a_non_empty_target_is_refused_without_force_and_replaced_with_it(client, auth, database_url, tmp_path):
    fill_through_the_api(client, auth)
    before = table_digests(database_url)
    path = backup(database_url, tmp_path)
    assert client.post("/api/notes", json={"title": "written after the backup"}).status_code == 201
    changed = table_digests(database_url)

    refused = restore(database_url, path)
    assert refused.returncode == 1
    error = refused.stderr.strip().splitlines()[-1]
    assert f"the database {database_name(database_url)} on 127.0.0.1:" in error
    assert "not empty" in error and "--force" in error.split("fix:")[1]
    assert table_digests(database_url) == changed

    forced = restore(database_url, path, "--force")
    assert forced.returncode == 0, forced.stderr
    assert table_digests(database_url) == before


def damage_truncate(path: Path) -> str:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    # a checksum that matches the damaged file: only reading the archive through can tell
    path.with_name(path.name + ".sha256").write_text(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}\n")
    return "is truncated or corrupt"


def damage_flip_a_byte(path: Path) -> str:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return "does not match its checksum"


def damage_lose_the_checksum(path: Path) -> str:
    path.with_name(path.name + ".sha256").unlink()
    return "has no checksum file"


@pytest.mark.parametrize("damage", [damage_truncate, damage_flip_a_byte, damage_lose_the_checksum])
def test_a_damaged_backup_is_refused_and_the_target_untouched(client, auth, database_url, tmp_path, damage):
    fill_through_the_api(client, auth)
    path = backup(database_url, tmp_path)
    assert client.post("/api/notes", json={"title": "written after the backup"}).status_code == 201
    before = table_digests(database_url)
    expected = damage(path)

    # --force: had the restore begun, --clean would have dropped every table
    result = restore(database_url, path, "--force")
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(f"restore: error: {path} {expected}"), error
    assert table_digests(database_url) == before


def test_a_schema_behind_the_migration_head_is_restored_and_reported(postgres_server, tmp_path):
    """A backup from an older release restores, but restore exits 1 and names the upgrade."""
    first = MIGRATIONS.get_base()
    url = postgres_server.create_database("old_release")
    target = postgres_server.create_database("old_release_target")
    try:
        app = create_app({"APP_ENV": "testing", "DATABASE_URL": url, "LOG_LEVEL": "WARNING"})
        with app.app_context():
            upgrade(revision=first)
            db.engine.dispose()
        result = restore(target, backup(url, tmp_path))
        assert result.returncode == 1
        error = result.stderr.strip().splitlines()[-1]
        assert f"at revision '{first}', not at the migration head '{HEAD}'" in error
        assert "flask --app wsgi db upgrade" in error.split("fix:")[1]
        assert "alembic_version: 1 rows" in result.stdout.splitlines()
    finally:
        postgres_server.drop_database("old_release")
        postgres_server.drop_database("old_release_target")


# --- retention ----------------------------------------------------------------------------

def daily(last: date, days: int, name: str = "kit") -> list[str]:
    return [f"{name}-{(last - timedelta(n)):%Y%m%d}T030000Z.dump" for n in range(days)]


def stamps(*days: str, name: str = "kit", extension: str = "dump") -> list[str]:
    return [f"{name}-{day}T030000Z.{extension}" if "T" not in day else f"{name}-{day}.{extension}" for day in days]


# (existing backups, BACKUP_KEEP_DAILY/WEEKLY/MONTHLY, the ones that must remain)
RETENTION_CASES = {
    "one day: only its newest": (
        stamps("20250310T010000Z", "20250310T020000Z", "20250310T030000Z"), (7, 4, 6),
        stamps("20250310T030000Z")),
    "daily: the last 3 days with a backup": (
        stamps("20250310", "20250311", "20250312", "20250313", "20250314"), (3, 0, 0),
        stamps("20250312", "20250313", "20250314")),
    "a gap does not thin the dailies": (
        stamps("20250101", "20250102", "20250301"), (3, 0, 0),
        stamps("20250101", "20250102", "20250301")),
    "weekly: the newest of each ISO week": (
        # Sunday 9 March is week 10; Monday 10 and Sunday 16 are week 11; Monday 17 is week 12
        stamps("20250309", "20250310", "20250316", "20250317"), (1, 2, 0),
        stamps("20250316", "20250317")),
    "weekly: ISO weeks across the new year": (
        # Monday 30 December 2024 is in 2025-W01, with Sunday 5 January
        stamps("20241228", "20241230", "20250105", "20250106"), (0, 3, 0),
        stamps("20241228", "20250105", "20250106")),
    "monthly: the newest of each month": (
        stamps("20250131", "20250201", "20250228", "20250315"), (0, 0, 2),
        stamps("20250228", "20250315")),
    "a name with an impossible date is left alone": (
        stamps("20250101", "20250102", "20250230"), (1, 0, 0),
        stamps("20250102", "20250230")),
    "nothing to keep still keeps the newest": (
        stamps("20250101", "20250102"), (0, 0, 0),
        stamps("20250102")),
    "each database is kept apart": (
        stamps("20250101", "20250102") + stamps("20250101", "20250102", name="app", extension="sqlite3"),
        (1, 0, 0),
        stamps("20250102") + stamps("20250102", name="app", extension="sqlite3")),
    "the defaults over 200 days": (
        daily(date(2025, 6, 30), 200), (7, 4, 6),
        # 7 days; weeks 27 (30 June), 26 (29 June), 25 and 24; the last day of each of 6 months
        stamps(*[f"202506{day:02}" for day in range(24, 31)], "20250622", "20250615",
               "20250531", "20250430", "20250331", "20250228", "20250131")),
}


@pytest.mark.parametrize("existing, keep, remaining", RETENTION_CASES.values(), ids=RETENTION_CASES.keys())
def test_retention_keeps_the_newest_of_each_day_week_and_month(tmp_path, existing, keep, remaining):
    for name in existing:
        (tmp_path / name).write_text(name)
        (tmp_path / f"{name}.sha256").write_text(f"{hashlib.sha256(name.encode()).hexdigest()}  {name}\n")
    (tmp_path / "notes.txt").write_text("not a backup: never touched")
    result = run("backup.sh", "--prune-only", env={
        "BACKUP_DIR": str(tmp_path),
        **dict(zip(("BACKUP_KEEP_DAILY", "BACKUP_KEEP_WEEKLY", "BACKUP_KEEP_MONTHLY"), map(str, keep), strict=True)),
    })
    assert result.returncode == 0, result.stderr
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {*remaining, *(f"{name}.sha256" for name in remaining), "notes.txt"}
    assert result.stderr.count("backup: pruned ") == len(existing) - len(remaining)


def test_retention_removes_partial_files_older_than_a_day(tmp_path):
    old, fresh = tmp_path / "kit-20250101T030000Z.dump.partial", tmp_path / "kit-20250102T030000Z.dump.partial"
    old.write_text("interrupted")
    fresh.write_text("maybe still being written")
    two_days_ago = old.stat().st_mtime - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    result = run("backup.sh", "--prune-only", env={"BACKUP_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert not old.exists() and fresh.exists()


# --- SQLite (the embedded development database) -------------------------------------------

@pytest.fixture
def sqlite_database(tmp_path) -> Path:
    path = tmp_path / "live" / "app.sqlite"
    path.parent.mkdir()
    migrate_to_head(f"sqlite:///{path}")
    with sqlite3.connect(path) as connection:
        connection.execute("INSERT INTO users (email, password_hash, created_at) VALUES ('ada@example.com', 'x', "
                           "'2025-01-01 00:00:00')")
    connection.close()
    return path


def test_sqlite_backup_of_a_live_database_is_consistent_and_restores(sqlite_database, tmp_path):
    """A writer commits row after row, and holds one transaction open, while backups run."""
    url = f"sqlite:///{sqlite_database}"
    stop = threading.Event()
    committed = []

    def write() -> None:
        with sqlite3.connect(sqlite_database, timeout=30, isolation_level=None) as connection:
            number = 0
            while not stop.is_set():
                number += 1
                connection.execute("INSERT INTO notes (owner_id, title, body, created_at, updated_at) "
                                   "VALUES (1, ?, 'ü', '2025-01-01', '2025-01-01')", (f"note {number}",))
                committed.append(number)
        connection.close()

    writer = threading.Thread(target=write)
    writer.start()
    holder = sqlite3.connect(sqlite_database, timeout=30, isolation_level=None)
    try:
        wait_for(lambda: len(committed) > 20, 15, "the writer committing")
        # a directory each: two backups in one second would have the same name
        paths = [backup(url, tmp_path / f"backups-{n}") for n in range(2)]
        stop.set()
        writer.join(30)
        # a second connection in a write transaction: its row is not committed, so not backed up
        holder.execute("BEGIN IMMEDIATE")
        holder.execute("INSERT INTO notes (owner_id, title, body, created_at, updated_at) "
                       "VALUES (1, 'uncommitted', '', '2025-01-01', '2025-01-01')")
        paths.append(backup(url, tmp_path / "more-backups"))
    finally:
        stop.set()
        writer.join(30)
        holder.close()

    for path in paths:
        assert path.suffix == ".sqlite3" and BACKUP_NAME.match(path.name)["name"] == "app"
        with sqlite3.connect(path) as connection:
            assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            titles = [row[0] for row in connection.execute("SELECT title FROM notes ORDER BY id")]
        connection.close()
        # a consistent snapshot: some prefix of the committed rows, nothing half-written
        assert titles == [f"note {n}" for n in range(1, len(titles) + 1)]
        assert len(titles) > 20

    target = tmp_path / "restored" / "app.sqlite"
    target.parent.mkdir()
    result = restore(f"sqlite:///{target}", paths[-1])
    assert result.returncode == 0, result.stderr
    assert sqlite_digests(target) == sqlite_digests(paths[-1])
    assert f"notes: {len(titles)} rows" in result.stdout.splitlines()


def test_sqlite_refuses_a_truncated_backup_and_a_non_empty_target(sqlite_database, tmp_path):
    url = f"sqlite:///{sqlite_database}"
    path = backup(url, tmp_path / "backups")
    before = sqlite_digests(sqlite_database)

    refused = restore(url, path)
    assert refused.returncode == 1
    assert f"the database {sqlite_database} is not empty" in refused.stderr and "--force" in refused.stderr

    truncated = tmp_path / "truncated" / path.name
    truncated.parent.mkdir()
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    truncated.with_name(path.name + ".sha256").write_text(
        f"{hashlib.sha256(truncated.read_bytes()).hexdigest()}  {path.name}\n")
    damaged = restore(url, truncated, "--force")
    assert damaged.returncode == 1
    assert f"{truncated} is truncated or corrupt" in damaged.stderr
    assert sqlite_digests(sqlite_database) == before


def test_make_backup_and_make_restore_on_the_embedded_database(sqlite_database, tmp_path):
    url = f"sqlite:///{sqlite_database}"

    def make(*args: str, **env: str) -> subprocess.CompletedProcess:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "BACKUP", "MAKE"))}
        # -o: the venv is already installed; never reinstall it from a test
        return subprocess.run(["make", "--no-print-directory", "-o", ".venv/.runtime", *args], cwd=REPO,
                              env={**base, "DATABASE_URL": url, "MIGRATION_HEAD": HEAD, **env},
                              capture_output=True, text=True, timeout=60)

    made = make("backup", BACKUP_DIR=str(tmp_path / "backups"))
    assert made.returncode == 0, made.stderr
    path = Path(made.stdout.strip().splitlines()[-1])
    assert path.parent == tmp_path / "backups" and path.name.startswith("app-")
    before = sqlite_digests(sqlite_database)
    with sqlite3.connect(sqlite_database) as connection:
        connection.execute("DELETE FROM users")
    connection.close()

    refused = make("restore", f"BACKUP={path}")
    assert refused.returncode != 0 and "pass --force" in refused.stderr
    # a connection open across the restore, as a running app's is, sees the restored rows
    live = sqlite3.connect(sqlite_database)
    try:
        assert live.execute("SELECT count(*) FROM users").fetchone() == (0,)
        forced = make("restore", f"BACKUP={path}", "FORCE=1")
        assert forced.returncode == 0, forced.stderr
        assert live.execute("SELECT count(*) FROM users").fetchone() == (1,)
    finally:
        live.close()
    assert "users: 1 rows" in forced.stdout.splitlines()
    assert sqlite_digests(sqlite_database) == before


# --- the schedule -------------------------------------------------------------------------

def log_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def start_schedule(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / "schedule.log"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "BACKUP_", "RESTIC_"))}
    with open(log, "wb") as output:
        proc = subprocess.Popen([str(SCRIPTS / "backup-schedule.sh")], env={**base, **env},
                                stdout=output, stderr=subprocess.STDOUT)
    return proc, log


def stopped_in_its_pause(proc: subprocess.Popen) -> bool:
    """SIGSTOP the schedule; True if it is held in the sleep between two runs (its only child is
    that sleep, alive or not yet reaped), where it can start no run; else SIGCONT and False."""
    os.kill(proc.pid, signal.SIGSTOP)
    # the stop lands asynchronously: until it has, the schedule may still fork a run
    wait_for(lambda: process_state(proc.pid)[1] in "TX", 5, "the schedule stopped")
    children = [process_state(pid)[0] for pid in child_pids(proc.pid)]
    if children == ["sleep"]:
        return True
    os.kill(proc.pid, signal.SIGCONT)
    return False


def test_schedule_backs_up_every_interval_and_stops_on_sigterm(database_url, tmp_path):
    backup_dir = tmp_path / "backups"
    # keep nothing but the newest, so each run prunes the one before whatever the date
    proc, log = start_schedule(tmp_path, {"DATABASE_URL": database_url, "BACKUP_DIR": str(backup_dir),
                                          "BACKUP_INTERVAL_SECONDS": "1", "BACKUP_ON_START": "1",
                                          "BACKUP_KEEP_DAILY": "0", "BACKUP_KEEP_WEEKLY": "0",
                                          "BACKUP_KEEP_MONTHLY": "0"})
    try:
        # SIGTERM in the pause, not in a run: one cut short after its --prune would have deleted
        # the file the last "backup done" names
        wait_for(lambda: sum(r["message"] == "backup done" for r in log_records(log)) >= 2
                 and stopped_in_its_pause(proc), 30, "two scheduled backups, then the pause")
        proc.send_signal(signal.SIGTERM)
        os.kill(proc.pid, signal.SIGCONT)
        assert proc.wait(10) == 0
    finally:
        stop_process(proc)
    records = log_records(log)
    assert records[0]["message"] == "backup schedule started" and records[0]["interval_seconds"] == 1
    assert records[-1]["message"] == "backup schedule stopped by a signal"
    done = [r for r in records if r["message"] == "backup done"]
    assert all(r["level"] == "INFO" and r["logger"] == "backup" and "timestamp" in r for r in done)
    newest = Path(done[-1]["file"])
    assert done[-1]["bytes"] == newest.stat().st_size
    check = subprocess.run(["sha256sum", "--check", newest.name + ".sha256"], cwd=backup_dir,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    # --prune ran: the earlier backup made way for the newer one
    assert done[-1]["pruned"] >= 1 and not Path(done[0]["file"]).exists()
    assert not list(backup_dir.glob("*.partial"))


def test_a_restarted_schedule_runs_a_due_backup_at_once(database_url, tmp_path):
    """Every release recreates the backup service: the wait counts from the newest backup, so
    a daily schedule restarted more often than daily still backs up."""
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    stamp = (datetime.now(timezone.utc) - timedelta(hours=25)).strftime("%Y%m%dT%H%M%SZ")
    (backup_dir / f"kit-{stamp}.dump").write_bytes(b"an old backup")
    proc, log = start_schedule(tmp_path, {"DATABASE_URL": database_url, "BACKUP_DIR": str(backup_dir),
                                          "BACKUP_INTERVAL_SECONDS": "86400"})
    try:
        wait_for(lambda: any(r["message"] == "backup done" for r in log_records(log)), 30,
                 "the overdue backup, not a day later")
    finally:
        stop_process(proc)


def test_a_first_schedule_backs_up_at_once(database_url, tmp_path):
    """A new deploy has no backup yet: the first one is made at start, not a day later."""
    proc, log = start_schedule(tmp_path, {"DATABASE_URL": database_url, "BACKUP_DIR": str(tmp_path / "backups"),
                                          "BACKUP_INTERVAL_SECONDS": "86400"})
    try:
        wait_for(lambda: any(r["message"] == "backup done" for r in log_records(log)), 30, "the first backup")
    finally:
        stop_process(proc)


def test_a_restarted_schedule_waits_for_a_backup_not_yet_due(database_url, tmp_path):
    backup_dir = tmp_path / "backups"
    backup_dir.mkdir()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    (backup_dir / f"kit-{stamp}.dump").write_bytes(b"a fresh backup")
    proc, log = start_schedule(tmp_path, {"DATABASE_URL": database_url, "BACKUP_DIR": str(backup_dir),
                                          "BACKUP_INTERVAL_SECONDS": "86400"})
    try:
        wait_for(lambda: any(r["message"] == "backup schedule started" for r in log_records(log)), 10,
                 "the schedule's first line")
        # it is asleep now; SIGTERM ends the sleep, and no backup was made
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        stop_process(proc)
    assert [r["message"] for r in log_records(log)] == ["backup schedule started",
                                                         "backup schedule stopped by a signal"]
    assert len(list(backup_dir.iterdir())) == 1


def check(backup_dir: Path, **env: str) -> subprocess.CompletedProcess:
    """The backup service's healthcheck: backup-schedule.sh --check."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "BACKUP_", "RESTIC_"))}
    return subprocess.run([str(SCRIPTS / "backup-schedule.sh"), "--check"], env={**base, "BACKUP_DIR": str(backup_dir),
                          **env}, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("hours_old, env, healthy", [
    ((25, 200), {}, True),  # daily: a run may start late and take long, up to the interval + 2 h
    ((27,), {}, False),
    ((2,), {"BACKUP_INTERVAL_SECONDS": "3600"}, True),
    ((4,), {"BACKUP_INTERVAL_SECONDS": "3600"}, False),
    ((2,), {"BACKUP_MAX_AGE_SECONDS": "3600"}, False),
    ((), {}, False),
], ids=["daily, 25 h", "daily, 27 h", "hourly, 2 h", "hourly, 4 h", "1 h allowed, 2 h", "none"])
def test_the_healthcheck_fails_once_the_newest_backup_is_older_than_the_schedule_allows(tmp_path, hours_old, env,
                                                                                       healthy):
    for hours in hours_old:
        stamp = (datetime.now(timezone.utc) - timedelta(hours=hours)).strftime("%Y%m%dT%H%M%SZ")
        (tmp_path / f"kit-{stamp}.dump").write_bytes(b"a backup")

    result = check(tmp_path, **env)

    assert result.returncode == (0 if healthy else 1), result.stdout + result.stderr
    line = (result.stdout if healthy else result.stderr).strip()
    assert line.startswith(f"backup-schedule: {'healthy' if healthy else 'unhealthy'}: ")
    assert "\n" not in line


def test_the_schedule_exports_the_newest_backups_time_for_prometheus(database_url, tmp_path):
    backup_dir, metrics = tmp_path / "backups", tmp_path / "metrics" / "backup.prom"
    metrics.parent.mkdir()
    proc, log = start_schedule(tmp_path, {"DATABASE_URL": database_url, "BACKUP_DIR": str(backup_dir),
                                          "BACKUP_INTERVAL_SECONDS": "86400", "BACKUP_METRICS_FILE": str(metrics)})
    try:
        wait_for(lambda: any(r["message"] == "backup done" for r in log_records(log)), 30, "the first backup")
        wait_for(lambda: metrics.exists() and " 0\n" not in metrics.read_text(), 10, "the metrics after the backup")
    finally:
        stop_process(proc)

    (done,) = [r for r in log_records(log) if r["message"] == "backup done"]
    taken = datetime.strptime(BACKUP_NAME.match(Path(done["file"]).name)["stamp"], "%Y%m%dT%H%M%SZ")
    text = metrics.read_text()
    assert text.splitlines()[2::3] == [f"backup_last_success_timestamp_seconds "
                                       f"{int(taken.replace(tzinfo=timezone.utc).timestamp())}",
                                       "backup_max_age_seconds 93600"]
    assert stat.S_IMODE(metrics.stat().st_mode) == 0o644  # the exporter is another user
    lint = subprocess.run([find_binary("promtool"), "check", "metrics"], input=text, capture_output=True, text=True,
                          timeout=30)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert check(backup_dir).returncode == 0


def test_schedule_logs_a_failed_run_and_goes_on(tmp_path):
    proc, log = start_schedule(tmp_path, {"DATABASE_URL": "postgresql://nobody:hunter2-secret@127.0.0.1:1/kit",
                                          "BACKUP_DIR": str(tmp_path / "backups"),
                                          "BACKUP_INTERVAL_SECONDS": "1", "BACKUP_ON_START": "1"})
    try:
        wait_for(lambda: sum(r["message"] == "backup failed" for r in log_records(log)) >= 2, 30, "two failed runs")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        stop_process(proc)
    failed = [r for r in log_records(log) if r["message"] == "backup failed"]
    assert failed[0]["level"] == "ERROR" and failed[0]["exit_status"] == 1
    assert failed[0]["error"].startswith("backup: error: pg_dump of kit on 127.0.0.1:1 failed: pg_dump: error: ")
    assert "Connection refused; fix: " in failed[0]["error"]
    assert "hunter2" not in log.read_text()


def test_sigterm_stops_a_backup_in_progress(database_url, tmp_path):
    """pg_dump waits on a lock another session holds; SIGTERM must not wait for it."""
    backup_dir = tmp_path / "backups"
    locker = psycopg2.connect(database_url)
    proc = None
    try:
        locker.cursor().execute("LOCK TABLE notes IN ACCESS EXCLUSIVE MODE")
        proc, log = start_schedule(tmp_path, {"DATABASE_URL": database_url, "BACKUP_DIR": str(backup_dir),
                                              "BACKUP_ON_START": "1"})
        waiting = ("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_dump' "
                   "AND datname = current_database()")
        watcher = psycopg2.connect(database_url)
        # autocommit: inside one transaction, pg_stat_activity would show one snapshot for ever
        watcher.autocommit = True
        try:
            cursor = watcher.cursor()

            def dump_count() -> int:
                cursor.execute(waiting)
                return cursor.fetchone()[0]

            wait_for(lambda: dump_count() == 1, 15, "pg_dump waiting for the lock")
            assert list(backup_dir.glob("*.partial"))
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 0
            wait_for(lambda: dump_count() == 0, 10, "pg_dump's session to end")
        finally:
            watcher.close()
    finally:
        locker.close()
        if proc:
            stop_process(proc)
    assert list(backup_dir.iterdir()) == []
    wait_for_line(log, "stopped by a signal", 5)


# --- restic: the off-host copy ------------------------------------------------------------

def test_restic_holds_a_copy_that_restores_to_the_same_file(database_url, tmp_path):
    password_file = tmp_path / "restic-password"
    password_file.write_text("correct restic battery\n")
    restic_env = {"RESTIC_REPOSITORY": str(tmp_path / "repository"), "RESTIC_PASSWORD_FILE": str(password_file),
                  "RESTIC_CACHE_DIR": str(tmp_path / "cache")}
    env = {**os.environ, **restic_env}
    subprocess.run(["restic", "init"], env=env, check=True, capture_output=True, timeout=60)

    backup_dir = tmp_path / "backups"
    path = backup(database_url, backup_dir, **restic_env)

    snapshots = json.loads(subprocess.run(["restic", "snapshots", "--json"], env=env, check=True,
                                          capture_output=True, text=True, timeout=60).stdout)
    assert len(snapshots) == 1 and snapshots[0]["paths"] == [str(backup_dir)]
    subprocess.run(["restic", "restore", "latest", "--target", str(tmp_path / "from-restic")], env=env, check=True,
                   capture_output=True, timeout=60)
    copy = tmp_path / "from-restic" / backup_dir.relative_to("/")
    assert (copy / path.name).read_bytes() == path.read_bytes()
    check = subprocess.run(["sha256sum", "--check", path.name + ".sha256"], cwd=copy, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_failing_restic_copy_fails_the_backup_loudly(database_url, tmp_path):
    password_file = tmp_path / "restic-password"
    password_file.write_text("correct restic battery\n")
    result = run("backup.sh", env={"DATABASE_URL": database_url, "BACKUP_DIR": str(tmp_path / "backups"),
                                   "RESTIC_REPOSITORY": str(tmp_path / "never-initialised"),
                                   "RESTIC_PASSWORD_FILE": str(password_file),
                                   "RESTIC_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("backup: error: restic backup to the off-host repository failed")
    assert "the local backup is kept" in error
    assert len(list((tmp_path / "backups").glob("*.dump"))) == 1


# --- secrets ------------------------------------------------------------------------------

PASSWORD = "p@ss:wörd/with\\odd%chars"


@pytest.fixture
def password_postgres(tmp_path_factory):
    """A server of its own that checks passwords (the session server trusts every login)."""
    server = PostgresServer()
    hba = server.workdir / "pg_hba.conf"
    hba.write_text("local all all trust\nhost all postgres 127.0.0.1/32 trust\n"
                   "host all all 127.0.0.1/32 scram-sha-256\n")
    server.settings["hba_file"] = str(hba)
    server.start()
    try:
        escaped = PASSWORD.replace("'", "''")
        server.psql(f"CREATE ROLE ops LOGIN PASSWORD '{escaped}'")
        for name in ("kit", "empty"):
            server.psql(f"CREATE DATABASE {name} OWNER ops")
        yield server
    finally:
        server.close()


def test_the_password_stays_out_of_argv_and_output(password_postgres, tmp_path):
    def url(name: str) -> str:
        return f"postgresql://ops:{quote(PASSWORD, safe='')}@127.0.0.1:{password_postgres.port}/{name}"

    migrate_to_head(url("kit"))
    # the tools under their own names, recording their arguments before running the real one
    shims = tmp_path / "shims"
    shims.mkdir()
    for tool in ("pg_dump", "pg_restore", "psql"):
        shim = shims / tool
        shim.write_text(f'#!/bin/sh\nprintf "{tool} %s\\n" "$*" >> "{tmp_path}/argv.log"\nexec /usr/bin/{tool} "$@"\n')
        shim.chmod(0o755)
    path_env = {"PATH": f"{shims}:{os.environ['PATH']}"}
    secret_file = tmp_path / "database-url"
    secret_file.write_text(url("kit") + "\n")

    made = run("backup.sh", env={"DATABASE_URL_FILE": str(secret_file), "BACKUP_DIR": str(tmp_path / "b"),
                                 **path_env})
    assert made.returncode == 0, made.stderr
    restored = restore(url("empty"), Path(made.stdout.splitlines()[-1]), **path_env)
    assert restored.returncode == 0, restored.stderr
    assert "alembic_version: 1 rows" in restored.stdout.splitlines()

    argv = (tmp_path / "argv.log").read_text()
    assert "pg_dump --format=custom" in argv and "pg_restore --single-transaction" in argv
    for text in (made.stdout, made.stderr, restored.stdout, restored.stderr, argv):
        assert PASSWORD not in text and quote(PASSWORD, safe="") not in text and "wörd" not in text
    stamp = BACKUP_NAME.match(Path(made.stdout.splitlines()[-1]).name)["stamp"]
    assert re.fullmatch(r"\d{8}T\d{6}Z", stamp)


@pytest.mark.parametrize("env, message", [
    ({"DATABASE_URL": "sqlite:///x", "DATABASE_URL_FILE": "/dev/null"},
     "set DATABASE_URL or DATABASE_URL_FILE, not both"),
    ({"DATABASE_URL_FILE": "/nonexistent/url"}, "DATABASE_URL_FILE=/nonexistent/url cannot be read"),
    ({"DATABASE_URL_FILE": "/dev/null"}, "DATABASE_URL_FILE=/dev/null is empty"),
    ({}, "DATABASE_URL is not set"),
    ({"DATABASE_URL": "mysql://db/kit"}, "DATABASE_URL has the unsupported scheme 'mysql'"),
])
def test_database_url_is_read_as_the_app_reads_it(tmp_path, env, message):
    result = run("backup.sh", env={"BACKUP_DIR": str(tmp_path), **env})
    assert result.returncode == 1
    assert result.stderr.startswith(f"backup: error: {message}")
    assert "; fix: " in result.stderr
