#!/usr/bin/env bash
### Back up on a schedule: scripts/backup.sh --prune every BACKUP_INTERVAL_SECONDS,
### until SIGTERM or SIGINT. The command of the `backup` Compose service.
### Usage: scripts/backup-schedule.sh [--check]
###   --check  only say whether the newest backup is recent enough: exit 0 if it
###            is at most BACKUP_MAX_AGE_SECONDS old, 1 if older or if there is
###            none (the backup service's healthcheck)
###   Each run logs one JSON line on stdout, in the shape of the app's logs
###   (level, logger, message, timestamp, and the run's fields), so the log
###   pipeline that reads the app reads this too. A failed run logs its error
###   and the loop goes on. A signal stops a backup in progress (its .partial
###   file is removed) and exits 0.
### Environment: everything scripts/backup.sh reads (BACKUP_DIR, DATABASE_URL,
### BACKUP_KEEP_*, RESTIC_*), and
###   BACKUP_INTERVAL_SECONDS   from the start of one run to the next (86400)
###   BACKUP_ON_START           1: the first run starts at once (0: when the
###                             newest backup in BACKUP_DIR is an interval old,
###                             or at once if there is none)
###   BACKUP_MAX_AGE_SECONDS    the newest backup is too old past this
###                             (BACKUP_INTERVAL_SECONDS + 7200: a run may
###                             take long and start late)
###   BACKUP_METRICS_FILE       when set, the newest backup's time and that
###                             limit are written there in Prometheus's text
###                             format at start and after every run
###                             (backup_last_success_timestamp_seconds,
###                             backup_max_age_seconds; 0: no backup yet), for
###                             node-exporter's textfile collector
###   A restart (every release recreates the service) does not postpone the
###   next backup: the first wait counts from the newest backup's time stamp,
###   and a backup already due runs at once.
set -o errexit -o nounset -o pipefail

HERE="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
child=""

usage() { sed -n 's/^### \{0,1\}//p' "$0"; }
die() {
  echo "backup-schedule: error: $1; fix: $2" >&2
  exit 1
}

json_string() {
  local value="$1"
  value="${value//\\/\\\\}"
  value="${value//\"/\\\"}"
  value="${value//$'\t'/\\t}"
  value="${value//$'\n'/\\n}"
  printf '"%s"' "$(tr -d '\000-\037' <<<"$value")"
}

# log LEVEL MESSAGE [NAME JSON-VALUE]...
log() {
  local line
  line="{\"level\": \"$1\", \"logger\": \"backup\", \"message\": $(json_string "$2")"
  shift 2
  while [[ $# -gt 0 ]]; do
    line+=", \"$1\": $2"
    shift 2
  done
  echo "$line, \"timestamp\": \"$(date -u +%Y-%m-%dT%H:%M:%S.%6N+00:00)\"}"
}

# A signal stops the backup or the sleep in progress (each runs in its own process group,
# so pg_dump or restic under backup.sh stop too), then the loop.
stop() {
  trap - TERM INT
  if [[ -n "$child" ]]; then
    kill -TERM -- "-$child" 2>/dev/null || kill -TERM "$child" 2>/dev/null || true
    wait "$child" 2>/dev/null || true
  fi
  log INFO "backup schedule stopped by a signal"
  rm -f -- "$out" "$err"
  exit 0
}

run_backup() {
  local started="$SECONDS" status=0 file
  setsid "$HERE/backup.sh" --prune >"$out" 2>"$err" &
  child=$!
  wait "$child" || status=$?
  child=""
  if [[ $status -eq 0 ]]; then
    file="$(tail -n 1 -- "$out")"
    log INFO "backup done" file "$(json_string "$file")" bytes "$(stat -c %s -- "$file")" \
      seconds "$((SECONDS - started))" pruned "$(grep -c '^backup: pruned ' -- "$err" || true)"
  else
    log ERROR "backup failed" error "$(json_string "$(tail -n 1 -- "$err")")" exit_status "$status" \
      seconds "$((SECONDS - started))"
  fi
}

# When the newest backup in BACKUP_DIR was taken (its name's UTC stamp, in seconds since the
# epoch), or nothing if there is none. backup.sh names a backup only once it is complete.
newest_backup_time() {
  local newest stamp
  newest="$(find "$BACKUP_DIR" -maxdepth 1 -regextype posix-extended \
    -regex '.*/[A-Za-z0-9_.-]+-[0-9]{8}T[0-9]{6}Z\.(dump|sqlite3)' -printf '%f\n' 2>/dev/null |
    sed -E 's/.*-([0-9]{8}T[0-9]{6}Z)\.[a-z0-9]+$/\1/' | sort | tail -n 1)"
  [[ -n "$newest" ]] || return 0
  stamp="${newest:0:4}-${newest:4:2}-${newest:6:2} ${newest:9:2}:${newest:11:2}:${newest:13:2} UTC"
  date -u -d "$stamp" +%s
}

# Seconds since the newest backup's stamp, or nothing if there is none.
newest_backup_age() {
  local taken
  taken="$(newest_backup_time)"
  [[ -n "$taken" ]] || return 0
  echo $(($(date -u +%s) - taken))
}

# The healthcheck: one line on stdout or stderr, exit 0 or 1.
check() {
  local age
  age="$(newest_backup_age)"
  if [[ -z "$age" ]]; then
    echo "backup-schedule: unhealthy: no backup in $BACKUP_DIR" >&2
    exit 1
  fi
  if ((age > max_age)); then
    echo "backup-schedule: unhealthy: the newest backup is $age s old, over BACKUP_MAX_AGE_SECONDS ($max_age)" >&2
    exit 1
  fi
  echo "backup-schedule: healthy: the newest backup is $age s old (at most $max_age)"
  exit 0
}

# BACKUP_METRICS_FILE, replaced whole (a reader never sees half of it); a failure is logged, and
# the schedule goes on.
write_metrics() {
  [[ -n "${BACKUP_METRICS_FILE:-}" ]] || return 0
  local taken
  taken="$(newest_backup_time)"
  if ! {
    printf '# HELP backup_last_success_timestamp_seconds When the newest backup was taken (0: none yet).\n'
    printf '# TYPE backup_last_success_timestamp_seconds gauge\n'
    printf 'backup_last_success_timestamp_seconds %s\n' "${taken:-0}"
    printf '# HELP backup_max_age_seconds The age past which the newest backup is too old.\n'
    printf '# TYPE backup_max_age_seconds gauge\n'
    printf 'backup_max_age_seconds %s\n' "$max_age"
  } >"$BACKUP_METRICS_FILE.tmp" 2>/dev/null || ! chmod 644 -- "$BACKUP_METRICS_FILE.tmp" ||
    ! mv -f -- "$BACKUP_METRICS_FILE.tmp" "$BACKUP_METRICS_FILE"; then
    log WARNING "the backup metrics could not be written" file "$(json_string "$BACKUP_METRICS_FILE")"
  fi
}

pause() {
  setsid sleep "$1" &
  child=$!
  wait "$child" || true
  child=""
}

mode=schedule
case "${1:-}" in
  "") ;;
  --check) mode=check ;;
  -h | --help)
    usage
    exit 0
    ;;
  *)
    usage >&2
    exit 2
    ;;
esac
interval="${BACKUP_INTERVAL_SECONDS:-86400}"
[[ "$interval" =~ ^[1-9][0-9]*$ ]] ||
  die "BACKUP_INTERVAL_SECONDS must be a whole number of seconds above 0, not '$interval'" "set it to 86400 for daily"
on_start="${BACKUP_ON_START:-0}"
[[ "$on_start" == 0 || "$on_start" == 1 ]] || die "BACKUP_ON_START must be 0 or 1, not '$on_start'" "set it to 0 or 1"
[[ -n "${BACKUP_DIR:-}" ]] || die "BACKUP_DIR is not set" "set BACKUP_DIR to the directory for backups"
max_age="${BACKUP_MAX_AGE_SECONDS:-$((interval + 7200))}"
[[ "$max_age" =~ ^[1-9][0-9]*$ ]] ||
  die "BACKUP_MAX_AGE_SECONDS must be a whole number of seconds above 0, not '$max_age'" \
    "leave it unset for BACKUP_INTERVAL_SECONDS + 7200"
[[ "$mode" == schedule ]] || check

out="$(mktemp)"
err="$(mktemp)"
trap stop TERM INT
log INFO "backup schedule started" interval_seconds "$interval" on_start "$on_start"
write_metrics
if [[ "$on_start" == 0 ]]; then
  age="$(newest_backup_age)"
  first_wait=$((interval - ${age:-$interval}))
  pause "$((first_wait > 0 ? first_wait : 0))"
fi
while true; do
  next=$((SECONDS + interval))
  run_backup
  write_metrics
  pause "$((next > SECONDS ? next - SECONDS : 0))"
done
