#!/usr/bin/env bash
### Write the secret files docker-compose.secrets.yml mounts, consistently.
### Usage: scripts/make-secrets.sh [--from-env FILE] <dir>
###   Creates <dir> (mode 700) with secret_key, postgres_password,
###   redis_password, and the database_url and redis_url built from those two,
###   so the app and the servers always agree. New values are random
###   (openssl rand -hex 32); --from-env takes SECRET_KEY, POSTGRES_PASSWORD and
###   REDIS_PASSWORD from an existing .env instead: how a running deploy moves
###   to Docker secrets without changing a password (Postgres keeps the one it
###   was initialised with; a new one here would lock the app out). Then set
###   SECRETS_DIR=<dir> in .env, remove those three variables from it, and add
###   docker-compose.secrets.yml to DEPLOY_COMPOSE_FILES.
###   The files are mode 644 inside the mode-700 directory: Compose bind-mounts
###   them with the host's permissions, and the containers' users (web's 10001,
###   the backup's postgres) must read them; on the host only root gets in.
###   Existing files are never overwritten.
set -o errexit -o nounset -o pipefail

usage() { sed -n 's/^### \{0,1\}//p' "$0"; }
die() {
  echo "make-secrets: error: $1; fix: $2" >&2
  exit 1
}

from_env=""
case "${1:-}" in
  -h | --help)
    usage
    exit 0
    ;;
  --from-env)
    [[ $# -eq 3 ]] || {
      usage >&2
      exit 2
    }
    from_env="$2"
    shift 2
    ;;
esac
if [[ $# -ne 1 || "$1" == -* ]]; then
  usage >&2
  exit 2
fi
dir="$1"

# A value from the .env file (the Compose contract: NAME=value, no quotes, no expansion).
env_value() { sed -n "s/^$1=//p" "$from_env" | tail -n 1; }
value_for() {
  local value=""
  if [[ -n "$from_env" ]]; then
    value="$(env_value "$1")"
    [[ -n "$value" ]] || die "$from_env has no $1" "add it, or run without --from-env for new random values"
  else
    value="$(openssl rand -hex 32)"
  fi
  printf '%s' "$value"
}

[[ -z "$from_env" || -r "$from_env" ]] || die "cannot read $from_env" "name the deploy's .env"
for name in secret_key postgres_password redis_password database_url redis_url; do
  [[ ! -e "$dir/$name" ]] || die "$dir/$name exists" "remove the directory's files first, or choose another directory"
done

secret_key="$(value_for SECRET_KEY)"
postgres_password="$(value_for POSTGRES_PASSWORD)"
redis_password="$(value_for REDIS_PASSWORD)"
[[ "$postgres_password$redis_password" =~ ^[A-Za-z0-9._~-]*$ ]] ||
  die "a password has characters that a URL must escape" "use hex passwords (openssl rand -hex 32)"

umask 022
install -d -m 0700 "$dir"
write() { printf '%s\n' "$2" >"$dir/$1"; }
write secret_key "$secret_key"
write postgres_password "$postgres_password"
write redis_password "$redis_password"
write database_url "postgresql://flask:$postgres_password@db:5432/flask"
write redis_url "redis://:$redis_password@redis:6379/0"
echo "make-secrets: wrote $dir/{secret_key,postgres_password,redis_password,database_url,redis_url}"
