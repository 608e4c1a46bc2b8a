#!/usr/bin/env bash
### Container entrypoint for the web and migrate services.
### Waits (bounded) until the TCP ports of DATABASE_URL and REDIS_URL accept
### connections, when those are set (directly or via DATABASE_URL_FILE /
### REDIS_URL_FILE), then execs the command so it runs as PID 1 and gets
### `docker stop`'s SIGTERM itself. It never touches the schema: migrations are
### the one-off `migrate` service.
### Usage: docker-entrypoint.sh COMMAND [ARG...]
###   WAIT_TIMEOUT  seconds to wait for each service (default 30)
set -o errexit -o nounset -o pipefail

usage() { sed -n 's/^### \{0,1\}//p' "$0"; }
die() {
  echo "docker-entrypoint: error: $*" >&2
  exit 1
}

if [[ $# -eq 0 ]]; then
  usage >&2
  exit 2
fi
if [[ "$1" == "-h" || "$1" == "--help" ]]; then
  usage
  exit 0
fi

wait_timeout="${WAIT_TIMEOUT:-30}"
[[ "$wait_timeout" =~ ^[0-9]+$ ]] || die "WAIT_TIMEOUT must be whole seconds, got '$wait_timeout'"

# Print the value of $1, or the contents of the file named by ${1}_FILE (Docker
# secrets), exactly as app/config.py reads them: both set is an error, the file's
# surrounding whitespace is dropped, and an unreadable or empty file is an error.
setting() {
  local name="$1" file_name="${1}_FILE" value
  if [[ -z "${!file_name:-}" ]]; then
    printf '%s\n' "${!name:-}"
    return
  fi
  [[ -z "${!name:-}" ]] || die "set $name or $file_name, not both"
  [[ -r "${!file_name}" ]] || die "$file_name=${!file_name} cannot be read"
  value="$(<"${!file_name}")"
  value="${value#"${value%%[![:space:]]*}"}"
  value="${value%"${value##*[![:space:]]}"}"
  [[ -n "$value" ]] || die "$file_name=${!file_name} is empty"
  printf '%s\n' "$value"
}

# Print "host port" for scheme://[user[:password]@]host[:port][/path], or
# nothing for URLs without a TCP host (sqlite:///..., unix sockets).
host_and_port() {
  local url="$1" default_port="$2" authority host port
  [[ "$url" == *://* ]] || return 0
  authority="${url#*://}"
  authority="${authority%%[/?#]*}"
  authority="${authority##*@}"
  if [[ "$authority" == \[* ]]; then
    host="${authority%%]*}"
    host="${host#[}"
    port="${authority#*]}"
  else
    host="${authority%%:*}"
    port="${authority#"$host"}"
  fi
  port="${port#:}"
  [[ -n "$host" ]] || return 0
  printf '%s %s\n' "$host" "${port:-$default_port}"
}

# Wait until host:port accepts a TCP connection; each attempt is capped at 2 s
# so an address that drops packets cannot stall the loop past the deadline.
wait_for() {
  local name="$1" host="$2" port="$3" deadline=$((SECONDS + wait_timeout))
  # shellcheck disable=SC2016 # $1/$2 expand in the inner bash, on purpose
  until timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$host" "$port" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      die "$host:$port (from $name) did not accept connections within ${wait_timeout}s; check $name and that the service is running, or raise WAIT_TIMEOUT"
    fi
    sleep 1
  done
  echo "docker-entrypoint: $host:$port (from $name) is accepting connections"
}

for spec in DATABASE_URL:5432 REDIS_URL:6379; do
  name="${spec%%:*}"
  url="$(setting "$name")"
  [[ -n "$url" ]] || continue
  read -r host port < <(host_and_port "$url" "${spec#*:}") || continue
  wait_for "$name" "$host" "$port"
done

exec "$@"
