#!/usr/bin/env bash
### Stand-in for the official postgres image's entrypoint: on an empty PGDATA,
### initdb with POSTGRES_USER/POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE, as the
### official image reads Docker secrets) and create POSTGRES_DB, then run the
### server as the postgres user, listening on all interfaces.
### Usage: docker-entrypoint.sh postgres [-c name=value ...]
set -o errexit -o nounset -o pipefail

as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }

if [[ "${1:-}" != "postgres" ]]; then
  exec "$@"
fi
if [[ -n "${POSTGRES_PASSWORD_FILE:-}" ]]; then
  POSTGRES_PASSWORD="$(<"$POSTGRES_PASSWORD_FILE")"
fi
user="${POSTGRES_USER:-postgres}"
db="${POSTGRES_DB:-$user}"

install -d -o postgres -g postgres -m 0700 "$PGDATA"
# Like the official entrypoint: the socket directory may be a fresh root-owned tmpfs.
install -d -o postgres -g postgres -m 3777 /var/run/postgresql
if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
  # only a new cluster needs it, as with the official image
  : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set (the official image refuses to start without it too)}"
  pwfile="$(mktemp)"
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  chown postgres "$pwfile"
  as_postgres initdb --username="$user" --pwfile="$pwfile" --auth-local=trust \
    --auth-host=scram-sha-256 --encoding=UTF8 -D "$PGDATA" >/dev/null
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  if [[ "$db" != "postgres" ]]; then
    printf 'CREATE DATABASE "%s" OWNER "%s";\n' "$db" "$user" |
      as_postgres postgres --single -jE -D "$PGDATA" postgres >/dev/null
  fi
  echo "stand-in postgres: initialised $PGDATA (user $user, database $db)"
fi
shift
exec setpriv --reuid=postgres --regid=postgres --init-groups \
  postgres -D "$PGDATA" -c listen_addresses='*' "$@"
