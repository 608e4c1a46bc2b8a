#!/usr/bin/env bash
### Back up the database at DATABASE_URL into BACKUP_DIR, with a checksum beside it.
### Usage: scripts/backup.sh [--prune | --prune-only]
###   Postgres (postgresql://, postgres://) is dumped with pg_dump -Fc to
###   <dbname>-<YYYYmmddTHHMMSSZ>.dump; SQLite (sqlite:///path) is copied with
###   its online backup API, never as a file, to <name>-<stamp>.sqlite3. Each
###   is written as <file>.partial and renamed when complete, then <file>.sha256
###   (sha256sum format) is written. The path is the last line on stdout.
###   --prune       afterwards, delete the backups the retention policy drops
###   --prune-only  only apply the retention policy; make no backup
### Environment:
###   DATABASE_URL or DATABASE_URL_FILE   the database (not both)
###   BACKUP_DIR            where backups go (required; created with mode 700)
###   BACKUP_KEEP_DAILY     the newest backup of each of the last N days (7)
###   BACKUP_KEEP_WEEKLY    ... of the last N ISO weeks (4)
###   BACKUP_KEEP_MONTHLY   ... of the last N months (6)
###   RESTIC_REPOSITORY     when set, the directory is then copied off-host with
###                         `restic backup`; RESTIC_PASSWORD or
###                         RESTIC_PASSWORD_FILE as restic reads them
set -o errexit -o nounset -o pipefail

PROG="$(basename "$0" .sh)"
BACKUP_NAME_PATTERN='^([A-Za-z0-9_.-]+)-([0-9]{8}T[0-9]{6}Z)\.(dump|sqlite3)$'
TMP_FILES=()

usage() { sed -n 's/^### \{0,1\}//p' "$0"; }
say() { echo "$PROG: $*" >&2; }
# One line: what failed, then what to do about it.
die() {
  echo "$PROG: error: $1; fix: $2" >&2
  exit 1
}
cleanup() { [[ ${#TMP_FILES[@]} -eq 0 ]] || rm -f -- "${TMP_FILES[@]}"; }
trap cleanup EXIT

# A private temporary file that is removed when the script exits; its path goes in $REPLY.
temp_file() {
  REPLY="$(mktemp "${TMPDIR:-/tmp}/$PROG.XXXXXX")"
  TMP_FILES+=("$REPLY")
}

# The line of a failed tool's output that says what went wrong (its first "error:" or
# "Fatal:" line, else its last), for the one-line error; the other lines go to stderr.
tool_error() {
  awk '{ lines[NR] = $0 }
    !pick && /(error|Fatal):/ { pick = NR }
    END {
      if (!pick) pick = NR
      for (n = 1; n <= NR; n++) if (n != pick) print lines[n] > "/dev/stderr"
      sub(/^[ \t]+/, "", lines[pick]); print lines[pick]
    }' "$1"
}

# NAME, or the contents of the file NAME_FILE names, as app/config.py reads secrets:
# both set is an error, the file's surrounding whitespace is dropped, an empty file is an error.
read_secret() {
  local name="$1" file_name="${1}_FILE" value
  if [[ -z "${!file_name:-}" ]]; then
    REPLY="${!name:-}"
    return
  fi
  [[ -z "${!name:-}" ]] || die "set $name or $file_name, not both" "unset one of them"
  [[ -r "${!file_name}" ]] || die "$file_name=${!file_name} cannot be read" "point $file_name at a readable file"
  value="$(<"${!file_name}")"
  value="${value#"${value%%[![:space:]]*}"}"
  value="${value%"${value##*[![:space:]]}"}"
  [[ -n "$value" ]] || die "$file_name=${!file_name} is empty" "write the URL into that file"
  REPLY="$value"
}

percent_decode() {
  local value="${1//\\/\\\\}"
  printf '%b' "${value//%/\\x}"
}

# Parse DATABASE_URL into DB_KIND (postgres or sqlite) and, for Postgres, PG_URI (the URL
# without its password), PG_DBNAME and DB_LABEL, with the password in a mode-600 PGPASSFILE:
# a password in argv would show in `ps`. For SQLite: SQLITE_PATH and DB_LABEL.
load_database_url() {
  local url rest authority tail userinfo="" hostinfo user password=""
  read_secret DATABASE_URL
  url="$REPLY"
  [[ -n "$url" ]] || die "DATABASE_URL is not set" "set DATABASE_URL or DATABASE_URL_FILE"
  case "$url" in
    postgres://* | postgresql://* | postgresql+*://*)
      DB_KIND=postgres
      rest="${url#*://}"
      authority="${rest%%[/?]*}"
      tail="${rest#"$authority"}"
      hostinfo="${authority##*@}"
      [[ "$authority" != *@* ]] || userinfo="${authority%@*}"
      user="${userinfo%%:*}"
      [[ "$userinfo" != *:* ]] || password="$(percent_decode "${userinfo#*:}")"
      [[ "$tail" != *password=* ]] ||
        die "DATABASE_URL has its password in the query string" "put it in the user part: postgresql://user:password@host/db"
      PG_DBNAME="${tail#/}"
      PG_DBNAME="$(percent_decode "${PG_DBNAME%%\?*}")"
      [[ -n "$PG_DBNAME" ]] || die "DATABASE_URL names no database" "end it with /<dbname>"
      PG_URI="postgresql://${user:+$user@}$hostinfo$tail"
      DB_LABEL="$PG_DBNAME on ${hostinfo:-the local socket}"
      if [[ -n "$password" ]]; then
        temp_file
        # .pgpass format: host:port:database:user:password, with \ and : escaped
        password="${password//\\/\\\\}"
        printf '*:*:*:*:%s\n' "${password//:/\\:}" >"$REPLY"
        export PGPASSFILE="$REPLY"
        unset PGPASSWORD
      fi
      ;;
    sqlite:///*)
      DB_KIND=sqlite
      # SQLAlchemy's form: sqlite:///relative/path or sqlite:////absolute/path
      SQLITE_PATH="${url#sqlite:///}"
      SQLITE_PATH="${SQLITE_PATH%%\?*}"
      DB_LABEL="$SQLITE_PATH"
      ;;
    sqlite:*) die "DATABASE_URL is an in-memory SQLite database" "use sqlite:///path/to/file" ;;
    *) die "DATABASE_URL has the unsupported scheme '${url%%:*}'" "use postgresql:// or sqlite:///" ;;
  esac
}

# A one-off query against the Postgres database; prints unaligned rows.
pg_query() {
  psql --no-psqlrc --no-password --tuples-only --no-align --quiet --set ON_ERROR_STOP=1 \
    --dbname="$PG_URI" --command="$1"
}

require() {
  command -v "$1" >/dev/null 2>&1 || die "$1 is not installed" "$2"
}

backup_postgres() {
  local partial="$1" log
  require pg_dump "apt-get install postgresql-client (the server's major version or newer)"
  temp_file
  log="$REPLY"
  pg_dump --format=custom --no-password --dbname="$PG_URI" --file="$partial" 2>"$log" ||
    die "pg_dump of $DB_LABEL failed: $(tool_error "$log")" "check DATABASE_URL and that the database is up"
  # reads the table of contents back: a dump that cannot even be listed is no backup
  pg_restore --list "$partial" >/dev/null 2>"$log" ||
    die "the new dump cannot be read back: $(tool_error "$log")" "check the free space in BACKUP_DIR"
}

backup_sqlite() {
  local partial="$1" log check
  require sqlite3 "apt-get install sqlite3"
  [[ -f "$SQLITE_PATH" ]] || die "the SQLite database $SQLITE_PATH does not exist" "check DATABASE_URL, or create the database first (make migrate)"
  [[ "$partial" != *\'* ]] || die "BACKUP_DIR contains a single quote" "use a path without one"
  temp_file
  log="$REPLY"
  # .backup is SQLite's online backup API: a consistent copy even while the app writes;
  # .timeout waits out a writer's lock instead of failing at once
  sqlite3 "$SQLITE_PATH" ".timeout 30000" ".backup '$partial'" 2>"$log" ||
    die "sqlite3 .backup of $SQLITE_PATH failed: $(tool_error "$log")" "check the file and the free space in BACKUP_DIR"
  check="$(sqlite3 -readonly "$partial" "PRAGMA integrity_check" 2>&1)" || true
  [[ "$check" == ok ]] || die "the new backup fails PRAGMA integrity_check: ${check%%$'\n'*}" "check the source database"
}

make_backup() {
  local name stamp extension file partial digest
  load_database_url
  mkdir -p -- "$BACKUP_DIR" # mode 700, from the umask
  BACKUP_DIR="$(cd -- "$BACKUP_DIR" && pwd)"
  stamp="$(date -u +%Y%m%dT%H%M%SZ)"
  if [[ "$DB_KIND" == postgres ]]; then
    name="$PG_DBNAME"
    extension=dump
  else
    name="$(basename -- "$SQLITE_PATH")"
    name="${name%.*}"
    extension=sqlite3
  fi
  name="${name//[^A-Za-z0-9_.-]/_}"
  file="$BACKUP_DIR/$name-$stamp.$extension"
  partial="$file.partial"
  [[ ! -e "$file" ]] || die "$file already exists" "wait a second and run again"
  TMP_FILES+=("$partial")
  say "backing up $DB_LABEL to $file"
  "backup_$DB_KIND" "$partial"
  # hashed before the rename, so a backup is never left without its checksum for long
  read -r digest _ < <(sha256sum -- "$partial")
  mv -- "$partial" "$file"
  # the name relative, so `sha256sum -c` works wherever the pair is copied to
  printf '%s  %s\n' "$digest" "$(basename -- "$file")" >"$file.sha256.partial"
  mv -- "$file.sha256.partial" "$file.sha256"
  BACKUP_FILE="$file"
}

natural_number() {
  local name="$1" value="${!1:-$2}"
  [[ "$value" =~ ^[0-9]+$ ]] || die "$name must be a whole number, not '$value'" "set $name=$2 or another count"
  echo "$value"
}

# Grandfather-father-son retention, as `restic forget --keep-daily/weekly/monthly` counts: per
# database name, walking from the newest backup back, keep the first one seen of each of the
# last KEEP_DAILY days that have a backup, KEEP_WEEKLY ISO weeks and KEEP_MONTHLY months. One
# backup may count for all three. The newest is always kept. Dates come from the stamp in the
# name, not the file's mtime (a copy or restore from restic keeps the name, not the mtime).
prune() {
  local daily weekly monthly file name stamp day week month keep line
  local group="" last_day="" last_week="" last_month="" days=0 weeks=0 months=0 pruned=0
  local -a backups
  local -A week_of=()
  daily="$(natural_number BACKUP_KEEP_DAILY 7)"
  weekly="$(natural_number BACKUP_KEEP_WEEKLY 4)"
  monthly="$(natural_number BACKUP_KEEP_MONTHLY 6)"
  [[ -d "$BACKUP_DIR" ]] || die "BACKUP_DIR=$BACKUP_DIR is not a directory" "make a backup first, or fix BACKUP_DIR"

  # a .partial is a backup that was interrupted; one a day old is not still being written
  while IFS= read -r -d '' file; do
    rm -f -- "$file"
    say "removed the leftover $file"
  done < <(find "$BACKUP_DIR" -maxdepth 1 -type f -name '*.partial' -mmin +1440 -print0)

  # "<name> <stamp> <file>", by name, then newest first
  mapfile -t backups < <(
    find "$BACKUP_DIR" -maxdepth 1 -type f -printf '%f\n' |
      sed -En "s/$BACKUP_NAME_PATTERN/\\1 \\2 &/p" |
      LC_ALL=C sort -k1,1 -k2,2r
  )
  [[ ${#backups[@]} -gt 0 ]] || return 0
  # each day's ISO week (30 December 2024 is in 2025-W01), from one `date` for all of them;
  # an impossible date (20250230) gets no week
  while read -r day week; do
    week_of[$day]="$week"
  done < <(printf '%s\n' "${backups[@]}" | cut -d ' ' -f 2 | sed -E 's/^(....)(..)(..).*/\1-\2-\3/' |
    sort -u | date -u -f - +'%Y%m%d %G-W%V' 2>/dev/null || true)

  for line in "${backups[@]}"; do
    read -r name stamp file <<<"$line"
    if [[ "$name" != "$group" ]]; then
      group="$name" last_day="" last_week="" last_month="" days=0 weeks=0 months=0
      keep=newest
    else
      keep=""
    fi
    day="${stamp:0:8}"
    month="${stamp:0:6}"
    week="${week_of[$day]:-}"
    if [[ -z "$week" ]]; then
      say "kept $BACKUP_DIR/$file: its name holds no valid date"
      continue
    fi
    if [[ "$day" != "$last_day" ]] && ((days < daily)); then
      last_day="$day" days=$((days + 1)) keep+=" daily"
    fi
    if [[ "$week" != "$last_week" ]] && ((weeks < weekly)); then
      last_week="$week" weeks=$((weeks + 1)) keep+=" weekly"
    fi
    if [[ "$month" != "$last_month" ]] && ((months < monthly)); then
      last_month="$month" months=$((months + 1)) keep+=" monthly"
    fi
    if [[ -z "$keep" ]]; then
      rm -f -- "$BACKUP_DIR/$file" "$BACKUP_DIR/$file.sha256"
      say "pruned $BACKUP_DIR/$file"
      pruned=$((pruned + 1))
    fi
  done
  say "retention (${daily} daily, ${weekly} weekly, ${monthly} monthly) pruned $pruned of ${#backups[@]}"
}

copy_off_host() {
  local log
  require restic "install restic (apt-get install restic), or unset RESTIC_REPOSITORY"
  [[ -n "${RESTIC_PASSWORD:-}${RESTIC_PASSWORD_FILE:-}${RESTIC_PASSWORD_COMMAND:-}" ]] ||
    die "RESTIC_REPOSITORY is set but no repository password" "set RESTIC_PASSWORD or RESTIC_PASSWORD_FILE"
  temp_file
  log="$REPLY"
  say "copying $BACKUP_DIR to the restic repository"
  # exit status 3 (some files unreadable) is a failure too: the copy must be whole
  restic backup --quiet --tag flask-kit-backup --exclude '*.partial' "$BACKUP_DIR" >"$log" 2>&1 ||
    die "restic backup to the off-host repository failed: $(tool_error "$log")" \
      "check RESTIC_REPOSITORY, its password and credentials (restic snapshots); the local backup is kept"
}

main() {
  local mode=backup
  if [[ $# -gt 1 ]]; then
    usage >&2
    exit 2
  fi
  case "${1:-}" in
    "") ;;
    --prune) mode=backup-and-prune ;;
    --prune-only) mode=prune ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      usage >&2
      exit 2
      ;;
  esac
  [[ -n "${BACKUP_DIR:-}" ]] || die "BACKUP_DIR is not set" "set BACKUP_DIR to the directory for backups"
  # backups hold every row, password hashes included: readable by their owner only
  umask 077

  if [[ "$mode" == prune ]]; then
    prune
    return
  fi
  make_backup
  if [[ "$mode" == backup-and-prune ]]; then
    prune
  fi
  if [[ -n "${RESTIC_REPOSITORY:-}" ]]; then
    copy_off_host
  fi
  say "done"
  echo "$BACKUP_FILE"
}

# restore.sh sources this file for the DATABASE_URL reader; run directly, it backs up
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
