#!/usr/bin/env bash
### Run the kit on Docker Swarm (deploy/swarm/stack.yml): deploy, update, roll back, scale.
### Usage: scripts/swarm.sh deploy <git-sha>
###        scripts/swarm.sh rollback
###        scripts/swarm.sh scale <replicas>
###        scripts/swarm.sh status
###   Run on a manager node, in a directory holding the stack file and .env
###   (REGISTRY, DOMAIN, SECRETS_DIR; optional: HTTP_PORT, HTTPS_PORT,
###   WEB_REPLICAS, WEB_CONCURRENCY, WEB_CPUS, WEB_HEALTH_INTERVAL (5s),
###   WEB_HEALTH_START_PERIOD (15s), the NGINX_ limits, POSTGRES_IMAGE,
###   REDIS_IMAGE). SECRETS_DIR holds scripts/make-secrets.sh's files. A node
###   labelled flask-kit.data=true holds Postgres and Redis; nodes labelled
###   flask-kit.edge=true run nginx (docs/scaling.md).
###   deploy <sha>   create the Swarm secrets SECRETS_DIR holds, each named after
###                  its content's hash. On an empty swarm: deploy the stack and
###                  wait until every service runs. Otherwise: run the migration
###                  job with <sha>'s image to completion, then update the stack:
###                  web rolls one task at a time, start-first, each new task
###                  passing its readiness healthcheck before an old one drains.
###                  A changed file in SECRETS_DIR rolls web the same way, on the
###                  same <sha> too, and deploy waits for that update as well.
###                  nginx is replaced only if its files changed. If a new task
###                  fails, Swarm rolls web back by itself, and this exits 1.
###                  A release that went live is recorded in releases.log, and
###                  the stack's secrets that no service names, now or in its
###                  previous spec, are removed.
###   rollback       the same update, to the release before the current one in
###                  releases.log, without migrating.
###   scale <n>      n web tasks (also written to .env's WEB_REPLICAS, which the
###                  next deploy keeps), once they run.
###   status         the services, web's tasks, and readiness through nginx;
###                  exits 1 if a service runs fewer tasks than it wants.
### Environment (optional):
###   SWARM_STACK           the stack's name (flask-kit)
###   SWARM_FILE            the stack file (stack.yml)
###   SWARM_TIMEOUT         seconds a deploy, update or scale may take (300)
###   DOCKER                the command (docker)
set -o errexit -o nounset -o pipefail

STACK="${SWARM_STACK:-flask-kit}"
FILE="${SWARM_FILE:-stack.yml}"
TIMEOUT="${SWARM_TIMEOUT:-300}"
SECRETS=(secret_key database_url redis_url postgres_password redis_password)
HISTORY=releases.log
step="start"

usage() { sed -n 's/^### \{0,1\}//p' "$0"; }
say() { echo "swarm: $*"; }
die() {
  echo "swarm: error: $step failed: $1; fix: $2" >&2
  exit 1
}
read -r -a docker_cmd <<<"${DOCKER:-docker}"
docker() { command "${docker_cmd[@]}" "$@"; }

# .env's lines as the stack file's variables (the Compose format: NAME=value, no quotes, no
# expansion; `docker stack deploy` reads no .env of its own).
load_env() {
  [[ -f .env ]] || die "there is no .env here" "run this in the directory holding .env and $FILE"
  [[ -f $FILE ]] || die "there is no $FILE here" "copy deploy/swarm/stack.yml here, or set SWARM_FILE"
  local name value
  while IFS='=' read -r name value; do
    [[ $name =~ ^[A-Z_][A-Z0-9_]*$ ]] && export "$name=$value"
  done < <(grep -v '^[[:space:]]*#' .env)
  [[ -n ${REGISTRY:-} ]] || die ".env sets no REGISTRY" "add REGISTRY=<registry prefix> to .env"
  [[ -n ${SECRETS_DIR:-} && -d $SECRETS_DIR ]] ||
    die ".env's SECRETS_DIR is not a directory" "run scripts/make-secrets.sh <dir> and set SECRETS_DIR=<dir> in .env"
}

# Swarm secrets are immutable: each is named after its content's hash, so a changed file is a
# new secret, and the stack update that names it rolls it out like an image.
ensure_secrets() {
  local name file hash secret
  for name in "${SECRETS[@]}"; do
    file="$SECRETS_DIR/$name"
    [[ -s $file ]] || die "$file is missing or empty" "run scripts/make-secrets.sh $SECRETS_DIR"
    hash="$(sha256sum "$file" | cut -c 1-12)"
    secret="${STACK}_${name}_$hash"
    if ! docker secret inspect "$secret" >/dev/null 2>&1; then
      docker secret create --label "flask-kit.secret=$name" "$secret" "$file" >/dev/null
      say "created secret $secret"
    fi
    export "${name^^}_SECRET=$secret"
  done
}

# The secrets this stack made that no service names, in its spec or in the one before it (what
# Swarm's own rollback returns to): each rotation leaves one behind. The engine refuses to remove
# a secret in use, and a deploy makes a removed one again if its file in SECRETS_DIR comes back.
prune_secrets() {
  local services=() kept secret
  mapfile -t services < <(docker service ls --quiet)
  ((${#services[@]})) || return 0
  kept=" $(docker service inspect --format '{{range .Spec.TaskTemplate.ContainerSpec.Secrets}}{{.SecretName}} {{end}}{{with .PreviousSpec}}{{range .TaskTemplate.ContainerSpec.Secrets}}{{.SecretName}} {{end}}{{end}}' \
    "${services[@]}" | tr '\n' ' ') "
  while read -r secret; do
    [[ $secret == "${STACK}_"* && $kept != *" $secret "* ]] || continue
    if docker secret rm "$secret" >/dev/null; then say "removed secret $secret, which no service names"; fi
  done < <(docker secret ls --filter label=flask-kit.secret --format '{{.Name}}')
}

service_exists() { docker service inspect "${STACK}_$1" >/dev/null 2>&1; }
running_image() { docker service inspect --format '{{.Spec.TaskTemplate.ContainerSpec.Image}}' "${STACK}_$1"; }
web_tasks_spec() { docker service inspect --format '{{json .Spec.TaskTemplate}}' "${STACK}_web"; }
update_state() { docker service inspect --format '{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}' "${STACK}_web"; }

# "running/desired" for a replicated service, as `docker service ls` counts them (a task with a
# healthcheck counts once it is healthy).
replicas() { docker service ls --filter "name=${STACK}_$1" --format '{{.Name}} {{.Replicas}}' | awk -v n="${STACK}_$1" '$1 == n { print $2 }'; }

wait_until() { # wait_until <what> <command...>: poll every second until it succeeds, or die at TIMEOUT
  local what="$1" deadline=$((SECONDS + TIMEOUT))
  shift
  until "$@"; do
    ((SECONDS < deadline)) || die "$what took over $TIMEOUT s" "read: scripts/swarm.sh status; docker service ps --no-trunc ${STACK}_web"
    sleep 1
  done
}

data_running() {
  local service count
  for service in db redis; do
    count="$(replicas "$service")"
    [[ $count == 1/1 ]] || return 1
  done
}

all_running() {
  local service count
  for service in web db redis; do
    count="$(replicas "$service")"
    [[ -n $count && ${count%%/*} == "${count##*/}" && ${count%%/*} != 0 ]] || return 1
  done
  [[ "$(docker service ps --filter desired-state=running --format '{{.CurrentState}}' "${STACK}_nginx" | grep -c '^Running')" -gt 0 ]]
}

# The migration job's run since the tasks listed in $1 (its earlier runs): "complete", "failed"
# once every attempt its restart policy allows has failed, or "" while it runs.
migration_outcome() {
  local before="$1" attempts
  attempts="$(docker service inspect --format '{{with .Spec.TaskTemplate.RestartPolicy}}{{.MaxAttempts}}{{end}}' \
    "${STACK}_migrate")"
  docker service ps --no-trunc --format '{{.ID}} {{.CurrentState}}' "${STACK}_migrate" |
    awk -v before=" $before " -v attempts="${attempts:-0}" '
      index(before, " " $1 " ") { next }
      $2 == "Complete" { done = 1 }
      $2 == "Failed" || $2 == "Rejected" { failed++ }
      END { if (done) print "complete"; else if (failed > attempts) print "failed" }'
}

# nginx's files as a hash of content (as deploy.sh compares them): two builds of the same files
# are the same nginx, and replacing it costs each edge node a moment of refused connections.
nginx_content() {
  docker run --rm --entrypoint sh "$1" -c \
    'find /etc/nginx/nginx.conf /etc/nginx/snippets /etc/nginx/templates /docker-entrypoint.d /srv/static \
       -type f -exec md5sum {} + | sort -k 2 | md5sum'
}

# Idempotent; tried three times because an engine can refuse a service on the network it has
# just created for the stack ("network ... not found"), seen on a swarm's first deploy.
stack_deploy() {
  local attempt
  for attempt in 1 2 3; do
    docker stack deploy --detach=true --with-registry-auth --compose-file "$FILE" "$STACK" >/dev/null && return 0
    ((attempt < 3)) && sleep 2
  done
  die "docker stack deploy failed three times" "read its errors above; docker stack ps $STACK"
}

set_env_value() {
  if grep -q "^$1=" .env; then sed -i "s|^$1=.*|$1=$2|" .env; else echo "$1=$2" >>.env; fi
}

# The release live before the current one: the newest sha in releases.log that is not the last.
previous_release() {
  [[ -f $HISTORY ]] || return 0
  awk '{ print $2 }' "$HISTORY" | tac | awk 'NR == 1 { current = $0; next } $0 != current { print; exit }'
}

deploy() { # deploy <sha> <migrate: yes|no> <action for the history>
  local sha="$1" migrate="$2" action="$3" web current_nginx next_nginx state
  web="$REGISTRY/flask-kit-web:sha-$sha"
  step="pull"
  docker pull --quiet "$web" >/dev/null || die "cannot pull $web" "check REGISTRY and that CI pushed sha-$sha"
  ensure_secrets
  export TAG="$sha" NGINX_TAG="$sha" MIGRATE_TAG="$sha"
  if ! service_exists web; then
    step="first deploy"
    say "deploying stack $STACK at $sha"
    stack_deploy
    # The job's own first run may give up before a new database accepts connections (its tasks
    # resolve `db` only once db runs): run it again, to completion, once db and redis run.
    wait_until "db and redis starting" data_running
    migrate "$web"
    step="first deploy"
    wait_until "the first deploy" all_running
    echo "$(date -u +%FT%TZ) $sha $action" >>"$HISTORY"
    say "$sha is live"
    prune_secrets
    return
  fi

  if [[ $migrate == yes ]]; then
    migrate "$web"
  else # the job keeps the image that migrated last: an older release's would fail on a newer schema
    MIGRATE_TAG="$(running_image migrate)"
    MIGRATE_TAG="${MIGRATE_TAG%@*}"
    export MIGRATE_TAG="${MIGRATE_TAG##*:sha-}"
  fi
  step="update"
  local before
  before="$(web_tasks_spec)"
  current_nginx="$(running_image nginx)"
  current_nginx="${current_nginx%@*}"
  next_nginx="$REGISTRY/flask-kit-nginx:sha-$sha"
  docker pull --quiet "$current_nginx" >/dev/null
  docker pull --quiet "$next_nginx" >/dev/null
  if [[ "$(nginx_content "$current_nginx")" == "$(nginx_content "$next_nginx")" ]]; then
    export NGINX_TAG="${current_nginx##*:sha-}"
  else
    say "nginx's files changed: replacing nginx (stop-first: each edge node refuses connections meanwhile)"
  fi
  stack_deploy
  # Another image or another secret (a rotated one) changes web's tasks, and Swarm rolls them;
  # the same release with the same secrets changes nothing, and there is no update to wait for.
  if [[ "$(web_tasks_spec)" == "$before" ]]; then
    say "web already runs $sha with these secrets: only the other services were updated"
  else
    say "updating web to $sha, one task at a time"
    wait_until "the update" update_settled
    state="$(update_state)"
    [[ $state == completed ]] ||
      die "web's update ended $state: a new task failed its readiness healthcheck, and Swarm rolled web back" \
        "read docker service ps --no-trunc ${STACK}_web and the new tasks' logs"
  fi
  echo "$(date -u +%FT%TZ) $sha $action" >>"$HISTORY"
  say "$sha is live"
  prune_secrets
}

# The migration job, run to completion with the release's image before web moves to it.
migrate() {
  local web="$1" earlier
  step="migrate"
  say "migrating with ${web##*:}'s image"
  earlier="$(docker service ps --no-trunc --format '{{.ID}}' "${STACK}_migrate" | tr '\n' ' ')"
  # --force: a new run even when the image is the one the job last ran (a redeploy)
  docker service update --detach=true --force --image "$web" "${STACK}_migrate" >/dev/null
  wait_until "the migration" migration_ended "$earlier"
  [[ "$(migration_outcome "$earlier")" == complete ]] ||
    die "the migration job failed; web still runs the release before" "read docker service logs ${STACK}_migrate"
}

migration_ended() { [[ -n "$(migration_outcome "$1")" ]]; }
web_runs() { [[ "$(replicas web)" == "$1/$1" ]]; }

# An update has settled when Swarm says it completed, or rolled back, or paused.
update_settled() {
  case "$(update_state)" in
    completed | rollback_completed | paused | rollback_paused) return 0 ;;
    *) return 1 ;;
  esac
}

status() {
  local failed=0 name count port
  docker stack services "$STACK"
  docker service ps --filter desired-state=running "${STACK}_web"
  for name in web db redis; do
    count="$(replicas "$name")"
    [[ ${count%%/*} == "${count##*/}" ]] || {
      echo "swarm: $name runs $count tasks" >&2
      failed=1
    }
  done
  port="${HTTPS_PORT:-443}"
  if curl --silent --show-error --fail --insecure --max-time 5 \
    --resolve "${DOMAIN:-localhost}:$port:127.0.0.1" "https://${DOMAIN:-localhost}:$port/health/ready"; then
    echo
  else
    echo "swarm: readiness through nginx on this node failed" >&2
    failed=1
  fi
  return "$failed"
}

main() {
  local previous
  case "${1:-}" in
    -h | --help)
      usage
      exit 0
      ;;
    deploy)
      [[ $# -eq 2 && $2 =~ ^[0-9a-f]{40}$ ]] || {
        usage >&2
        exit 2
      }
      load_env
      deploy "$2" yes deploy
      ;;
    rollback)
      [[ $# -eq 1 ]] || {
        usage >&2
        exit 2
      }
      load_env
      step="rollback"
      previous="$(previous_release)"
      [[ -n $previous ]] || die "releases.log names no release before the current one" \
        "deploy the release you want: scripts/swarm.sh deploy <sha>"
      say "rolling back to $previous (no migration: the schema stays as it is)"
      deploy "$previous" no rollback
      ;;
    scale)
      [[ $# -eq 2 && $2 =~ ^[1-9][0-9]?$ ]] || {
        usage >&2
        exit 2
      }
      load_env
      step="scale"
      set_env_value WEB_REPLICAS "$2"
      docker service scale --detach=true "${STACK}_web=$2" >/dev/null
      wait_until "scaling web to $2" web_runs "$2"
      say "web runs $2 tasks"
      ;;
    status)
      [[ $# -eq 1 ]] || {
        usage >&2
        exit 2
      }
      load_env
      status
      ;;
    *)
      usage >&2
      exit 2
      ;;
  esac
}

main "$@"
