#!/usr/bin/env bash
### Restore a backup made by scripts/backup.sh into the database at DATABASE_URL.
### Usage: scripts/restore.sh [--force] <backup>
###   Before the target is touched, the backup must match <backup>.sha256 and
###   read back in full (a truncated or corrupt file is refused). An empty
###   target is required unless --force is given.
###   Postgres (<name>-<stamp>.dump): pg_restore in a single transaction, so a
###   failure leaves the database as it was. --force drops and recreates the
###   objects the backup holds (--clean --if-exists) in that same transaction.
###   SQLite (<name>-<stamp>.sqlite3): copied into the file with SQLite's
###   backup API, which the running app sees at once; PRAGMA integrity_check
###   runs on the backup before and on the database after.
###   Afterwards it prints each table's row count, and fails unless the
###   restored schema is at the migration head.
###   --force  replace the contents of a database that is not empty
### Environment:
###   DATABASE_URL or DATABASE_URL_FILE   the target database (not both)
###   MIGRATION_HEAD   the head revision to expect, or MIGRATION_HEAD_FILE (set in
###                    the backup image); default: from
###                    `.venv/bin/flask --app wsgi db heads` in this checkout)
set -o errexit -o nounset -o pipefail

# shellcheck source=scripts/backup.sh disable=SC1091
source "$(dirname -- "${BASH_SOURCE[0]}")/backup.sh"
REPO="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"

# The revision the restored schema must be at, in $REPLY.
migration_head() {
  local heads
  # MIGRATION_HEAD, or MIGRATION_HEAD_FILE: the backup image bakes its release's head there
  read_secret MIGRATION_HEAD
  [[ -z "$REPLY" ]] || return 0
  [[ -x "$REPO/.venv/bin/flask" ]] ||
    die "cannot find the migration head: no $REPO/.venv/bin/flask" \
      "set MIGRATION_HEAD to the revision that \`flask --app wsgi db heads\` prints for this release"
  # `db heads` reads only migrations/; a throwaway config keeps the deploy's settings
  # (production's checks, its secrets) out of it
  heads="$(cd -- "$REPO" && env -i PATH="$PATH" APP_ENV=testing DATABASE_URL=sqlite:// \
    .venv/bin/flask --app wsgi db heads 2>&1)" ||
    die "flask db heads failed: ${heads##*$'\n'}" "run make migrate once to install the app, or set MIGRATION_HEAD"
  heads="$(awk '/\(head\)/ { print $1 }' <<<"$heads")"
  [[ -n "$heads" && "$heads" != *$'\n'* ]] ||
    die "the migrations have no single head (${heads//$'\n'/ })" "merge the heads (flask db merge) or set MIGRATION_HEAD"
  REPLY="$heads"
}

# Compare the backup with the digest in <backup>.sha256; refuse on any doubt.
verify_checksum() {
  local backup="$1" expected actual
  [[ -f "$backup.sha256" ]] ||
    die "$backup has no checksum file ($backup.sha256)" "restore a backup that has its .sha256 beside it"
  read -r expected _ <"$backup.sha256" || true
  read -r actual _ < <(sha256sum -- "$backup")
  [[ "$actual" == "$expected" ]] ||
    die "$backup does not match its checksum in $backup.sha256: the file is damaged" \
      "restore another backup, or fetch an intact copy (restic restore)"
  say "checksum of $backup verified"
}

restore_postgres() {
  local backup="$1" log tables
  local -a options=(--single-transaction --exit-on-error --no-owner --no-privileges)
  require pg_restore "apt-get install postgresql-client"
  require psql "apt-get install postgresql-client"
  temp_file
  log="$REPLY"
  # --list reads only the table of contents; a restore to /dev/null reads every data block,
  # so a truncated or corrupt file fails here, before the target is touched
  pg_restore --exit-on-error --file=/dev/null -- "$backup" 2>"$log" ||
    die "$backup is truncated or corrupt: $(tool_error "$log")" \
      "restore an older backup; the database $DB_LABEL was not touched"
  tables="$(pg_query "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")" ||
    die "cannot connect to $DB_LABEL" "check DATABASE_URL and that the database is up"
  if ((tables > 0)); then
    [[ "$FORCE" == 1 ]] ||
      die "the database $DB_LABEL is not empty ($tables tables in schema public)" \
        "restore into an empty database, or pass --force to replace its contents"
    options+=(--clean --if-exists)
    say "--force: replacing the contents of $DB_LABEL"
  fi
  say "restoring $backup into $DB_LABEL"
  pg_restore "${options[@]}" --no-password --dbname="$PG_URI" -- "$backup" 2>"$log" ||
    die "pg_restore into $DB_LABEL failed: $(tool_error "$log")" \
      "the single transaction was rolled back, so the database is as it was; fix the cause and run again"
}

restore_sqlite() {
  local backup="$1" check tables=0
  require sqlite3 "apt-get install sqlite3"
  [[ "$backup" != *\'* ]] || die "the backup's path contains a single quote" "rename or move the file"
  check="$(sqlite3 -readonly "$backup" "PRAGMA integrity_check" 2>&1)" || true
  [[ "$check" == ok ]] ||
    die "$backup is truncated or corrupt: ${check%%$'\n'*}" "restore an older backup; $DB_LABEL was not touched"
  if [[ -s "$SQLITE_PATH" ]]; then
    tables="$(sqlite3 -readonly "$SQLITE_PATH" "SELECT count(*) FROM sqlite_master WHERE type = 'table'")" ||
      die "cannot read the SQLite database $SQLITE_PATH" "check DATABASE_URL"
  fi
  if ((tables > 0)); then
    [[ "$FORCE" == 1 ]] ||
      die "the database $DB_LABEL is not empty ($tables tables)" \
        "restore into an empty database, or pass --force to replace its contents"
    say "--force: replacing the contents of $DB_LABEL"
  fi
  say "restoring $backup into $DB_LABEL"
  # the backup API writes through SQLite's locks and journal: all or nothing, and a running
  # app sees the new contents (replacing the file would leave it writing to the old one)
  check="$(sqlite3 "$SQLITE_PATH" ".timeout 30000" ".restore '$backup'" 2>&1)" ||
    die "sqlite3 .restore into $SQLITE_PATH failed: ${check##*$'\n'}" "stop what holds the database locked, then run again"
  check="$(sqlite3 -readonly "$SQLITE_PATH" "PRAGMA integrity_check" 2>&1)" || true
  [[ "$check" == ok ]] || die "$SQLITE_PATH fails PRAGMA integrity_check after the restore" "restore again with --force"
}

# Print "<table>: <n> rows" for every table; the schema's revision goes in $REPLY ("" if none).
report_postgres() {
  # %I quotes each name; \gexec runs each generated query
  printf '%s\n' "SELECT format('SELECT %L, count(*) FROM public.%I', tablename, tablename)
    FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename \\gexec" |
    psql --no-psqlrc --no-password --tuples-only --no-align --quiet --field-separator=' ' \
      --set ON_ERROR_STOP=1 --dbname="$PG_URI" | awk '{ printf "%s: %s rows\n", $1, $2 }'
  REPLY=""
  if [[ "$(pg_query "SELECT to_regclass('public.alembic_version') IS NOT NULL")" == t ]]; then
    REPLY="$(pg_query "SELECT string_agg(version_num, ' ') FROM public.alembic_version")"
  fi
}

report_sqlite() {
  local table
  sqlite3 -readonly "$SQLITE_PATH" "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name" |
    while IFS= read -r table; do
      echo "$table: $(sqlite3 -readonly "$SQLITE_PATH" "SELECT count(*) FROM \"${table//\"/\"\"}\"") rows"
    done
  REPLY=""
  if [[ -n "$(sqlite3 -readonly "$SQLITE_PATH" "SELECT name FROM sqlite_master WHERE name = 'alembic_version'")" ]]; then
    REPLY="$(sqlite3 -readonly "$SQLITE_PATH" "SELECT group_concat(version_num, ' ') FROM alembic_version")"
  fi
}

main() {
  local backup="" revision kind head
  FORCE=0
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --force) FORCE=1 ;;
      -h | --help)
        usage
        exit 0
        ;;
      -*)
        usage >&2
        exit 2
        ;;
      *)
        [[ -z "$backup" ]] || {
          usage >&2
          exit 2
        }
        backup="$1"
        ;;
    esac
    shift
  done
  if [[ -z "$backup" ]]; then
    usage >&2
    exit 2
  fi
  [[ -f "$backup" ]] || die "$backup is not a file" "pass the path of a backup (ls \$BACKUP_DIR)"
  verify_checksum "$backup"
  load_database_url
  case "$backup" in
    *.dump) kind=postgres ;;
    *.sqlite3) kind=sqlite ;;
    *) die "$backup is neither a .dump nor a .sqlite3 backup" "pass a file that scripts/backup.sh made" ;;
  esac
  [[ "$kind" == "$DB_KIND" ]] ||
    die "$backup is a $kind backup but DATABASE_URL is a $DB_KIND database" "point DATABASE_URL at a $kind database"
  migration_head
  head="$REPLY"

  "restore_$kind" "$backup"
  "report_$kind"
  revision="$REPLY"
  [[ "$revision" == "$head" ]] ||
    die "the restored schema is at revision '${revision:-none}', not at the migration head '$head'" \
      "run flask --app wsgi db upgrade (make migrate) to bring it to the head; if the backup comes from a newer release, deploy that release instead"
  say "restored $backup into $DB_LABEL; the schema is at the migration head $head"
}

main "$@"
