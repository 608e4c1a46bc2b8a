#!/usr/bin/env bash
### Release, roll back and scale on one server, without dropping a request.
### Usage: scripts/deploy.sh deploy <git-sha> [<web-digest> <nginx-digest> <backup-digest>]
###        scripts/deploy.sh rollback [<git-sha>]
###        scripts/deploy.sh status
###        scripts/deploy.sh scale <replicas>
###   Run where docker-compose.yml, docker-compose.prod.yml and .env live (no
###   source checkout needed). A release is the three images CI pushed for one
###   commit: $REGISTRY/flask-kit-web:sha-<sha>, flask-kit-nginx:sha-<sha> and
###   flask-kit-backup:sha-<sha>. Each runs by digest: the ones CI pushed
###   (sha256:<64 hex>, as CI passes them), else the ones the tag pointed to when
###   pulled. .env and the history record them, so a rollback returns to the
###   same bytes, whatever was pushed under the tag since.
###   nginx sends to the web replicas on the `live` network (alias web-live),
###   re-resolving that name every second: no step here reloads nginx.
###   deploy <sha> [digests]
###                   pull the images, check they are that commit's, migrate
###                   (one-off; the schema revision before and after is
###                   printed), start the new web
###                   replicas beside the old ones, wait until each is ready,
###                   make them live beside the old, check readiness through
###                   nginx, drain the old replicas, record the release.
###                   A failure before going live removes the new replicas; a
###                   failed check after it drains them. Either way the old
###                   release keeps serving and stays recorded, and it exits 1.
###   rollback [sha]  the same, to the release before the current one (or to
###                   any recorded <sha>), by its recorded digests, without
###                   migrating.
###   status          the current release, the history, and whether each
###                   replica is ready and reached by nginx; exits 1 if one is not.
###   scale <n>       run n live web replicas of the current release, and make
###                   live any ready replica that nginx does not reach.
### Environment (optional):
###   DEPLOY_READY_TIMEOUT   seconds new replicas get to become ready (60)
###   DEPLOY_GATE_CHECKS     ready answers in a row through nginx after a switch (5)
###   DEPLOY_KEEP_RELEASES   releases whose images stay for instant rollback (3)
###   DEPLOY_COMPOSE_FILES   Compose files (docker-compose.yml docker-compose.prod.yml)
###   HTTPS_PORT             nginx's HTTPS port on this host (else .env's, else 443)
###   COMPOSE, DOCKER        the commands (docker compose, docker)
set -o errexit -o nounset -o pipefail

HISTORY=releases.log
LOCK=.deploy.lock
READY_TIMEOUT="${DEPLOY_READY_TIMEOUT:-60}"
GATE_CHECKS="${DEPLOY_GATE_CHECKS:-5}"
KEEP_RELEASES="${DEPLOY_KEEP_RELEASES:-3}"
# Longer than GUNICORN_GRACEFUL_TIMEOUT (30 s): in-flight requests finish first.
DRAIN_TIMEOUT=40
# Replicas drained at once. A draining replica refuses connections until it has stopped
# and left DNS; nginx tries 3 replicas per request (proxy_next_upstream_tries in
# nginx/snippets/proxy.conf), so a request meets at most 2 draining ones before a ready one.
DRAIN_BATCH=2
# nginx's name for the live replicas (NGINX_UPSTREAM in docker-compose.prod.yml).
LIVE_ALIAS=web-live
step="start"

usage() { sed -n 's/^### \{0,1\}//p' "$0"; }
say() { echo "deploy: $*"; }
# One line that names the step that failed and what to do about it.
die() {
  echo "deploy: error: $step failed: $1; fix: $2" >&2
  exit 1
}

read -r -a compose_cmd <<<"${COMPOSE:-docker compose}"
read -r -a docker_cmd <<<"${DOCKER:-docker}"
read -r -a compose_files <<<"${DEPLOY_COMPOSE_FILES:-docker-compose.yml docker-compose.prod.yml}"
compose() {
  local -a args=()
  local file
  for file in "${compose_files[@]}"; do args+=(--file "$file"); done
  command "${compose_cmd[@]}" "${args[@]}" "$@"
}
# `command`: the binary, not this function (which would call itself)
docker() { command "${docker_cmd[@]}" "$@"; }

# A value from .env (no export, no quotes, no expansion: the Compose contract).
env_value() { sed -n "s/^$1=//p" .env | tail -n 1; }
set_env_value() {
  if grep -q "^$1=" .env; then sed -i "s|^$1=.*|$1=$2|" .env; else echo "$1=$2" >>.env; fi
}

current_release() {
  local sha=""
  [[ -f $HISTORY ]] && sha="$(awk 'END { print $3 }' "$HISTORY")"
  echo "${sha:-$(env_value TAG)}"
}

# Recorded releases, newest first, each once.
releases() {
  if [[ -f $HISTORY ]]; then awk '{ print $3 }' "$HISTORY" | tac | awk '!seen[$0]++'; fi
}

# One line per switch: time, action, sha, and the digests that ran (web=… nginx=… backup=…).
record() {
  printf '%s %s %s web=%s nginx=%s backup=%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$1" "$2" \
    "$WEB_DIGEST" "$NGINX_DIGEST" "$BACKUP_DIGEST" >>"$HISTORY"
}

# The digests recorded for release $1, as three words (web nginx backup), or nothing.
recorded_digests() {
  [[ -f $HISTORY ]] || return 0
  awk -v sha="$1" '$3 == sha && $4 ~ /^web=sha256:/ { line = $4 " " $5 " " $6 } END { print line }' "$HISTORY" |
    sed 's/[a-z]*=//g'
}

IMAGES=(web nginx backup)
DIGEST='^sha256:[0-9a-f]{64}$'

# Every Compose command from here on runs release $1, pinned to the digests $2..$4 if given
# (the environment wins over .env; an empty digest means the tag).
use_release() {
  export TAG="$1" WEB_DIGEST="${2:-}" NGINX_DIGEST="${3:-}" BACKUP_DIGEST="${4:-}"
}

# The reference Compose runs for image $1 (web, nginx, backup) of the release in use.
image_ref() {
  local digest_var="${1^^}_DIGEST"
  echo "$(env_value REGISTRY)/flask-kit-$1:sha-$TAG${!digest_var:+@${!digest_var}}"
}

# After the pull: pin each image to what was pulled, if no digest was given, and check that
# each is the commit's own build (its revision label), so a digest from another commit or a
# tag pushed by hand is refused before anything starts.
pin_and_check() {
  local name ref digest_var revision
  for name in "${IMAGES[@]}"; do
    digest_var="${name^^}_DIGEST"
    if [[ -z ${!digest_var} ]]; then
      ref="$(image_ref "$name")"
      printf -v "$digest_var" '%s' "$(docker image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$ref" |
        sed -n "s|^${ref%%:sha-*}@||p" | head -n 1)"
      [[ ${!digest_var} =~ $DIGEST ]] || die "$ref has no registry digest" "push it to the registry and deploy again"
      export "${digest_var?}"
    fi
    ref="$(image_ref "$name")"
    revision="$(docker image inspect --format '{{index .Config.Labels "org.opencontainers.image.revision"}}' "$ref")"
    [[ $revision == "$TAG" ]] ||
      die "$ref was built from commit '${revision:-unknown}', not $TAG" "pass the digests CI pushed for $TAG"
  done
}

# The schema's migration revision, read in the db container ("none" before any migration).
schema_revision() {
  # shellcheck disable=SC2016 # expanded by the db container's shell, from its own environment
  compose exec -T db sh -c 'psql --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" --tuples-only --no-align \
    --command "SELECT version_num FROM alembic_version" 2>/dev/null || echo none' | paste -sd ' ' | sed 's/^$/none/'
}

web_replicas() { compose ps --quiet web; }
container_name() { docker inspect --format '{{.Name}}' "$1" | sed 's|^/||'; }
# "name address..., ..." for replicas, and the time: what to match against nginx's error log.
describe() {
  local id
  for id in "$@"; do
    docker inspect --format '{{.Name}}{{range .NetworkSettings.Networks}} {{.IPAddress}}{{end}}' "$id" | sed 's|^/||'
  done | paste -sd ',' | sed "s/,/, /g; s/^/at $(date +%T): /"
}

replica_ready() {
  docker exec "$1" python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=3)" \
    >/dev/null 2>&1
}

# Every replica in "$@" ready within READY_TIMEOUT; a replica that exits fails at once. On
# failure, $not_ready says which way, and the failing replicas' last log lines are printed.
not_ready=""
wait_ready() {
  local deadline=$((SECONDS + READY_TIMEOUT)) id pending=("$@")
  while ((${#pending[@]})); do
    local still=()
    for id in "${pending[@]}"; do
      # exited, or restarting after it exited (restart: unless-stopped)
      if [[ "$(docker inspect --format '{{.State.Status}} {{.RestartCount}}' "$id")" != "running 0" &&
        "$(docker inspect --format '{{.State.Status}}' "$id")" != created ]]; then
        not_ready="$(container_name "$id") exited after $((SECONDS + READY_TIMEOUT - deadline)) s"
        replica_logs "$id"
        return 1
      fi
      replica_ready "$id" || still+=("$id")
    done
    pending=("${still[@]}")
    ((${#pending[@]})) || return 0
    if ((SECONDS >= deadline)); then
      not_ready="${#pending[@]} not ready within ${READY_TIMEOUT} s (DEPLOY_READY_TIMEOUT)"
      for id in "${pending[@]}"; do replica_logs "$id"; done
      return 1
    fi
    sleep 1
  done
}

replica_logs() {
  echo "deploy: the last log lines of $(container_name "$1"):" >&2
  docker logs --tail 5 "$1" >&2 || true
}

nginx_container() { compose ps --quiet nginx; }

# The prod file's `live` network, as Compose named it (<project>_live): nginx is on it.
live_network() {
  docker inspect --format '{{range $name, $_ := .NetworkSettings.Networks}}{{println $name}}{{end}}' \
    "$(nginx_container)" | grep '_live$' | head -n 1
}

# The replica's address on the live network if it holds the alias there, else nothing.
live_address() {
  docker inspect --format "{{with index .NetworkSettings.Networks \"$live\"}}{{.IPAddress}} {{join .Aliases \",\"}}{{end}}" "$1" |
    awk -v alias="$LIVE_ALIAS" '{ n = split($2, names, ","); for (i = 1; i <= n; i++) if (names[i] == alias) print $1 }'
}

# nginx sends to a replica from the moment it holds the alias on the live network (within the
# second nginx takes to re-resolve), and a restart after a crash keeps it there. Idempotent.
go_live() {
  local id
  for id in "$@"; do
    [[ -n "$(live_address "$id")" ]] || docker network connect --alias "$LIVE_ALIAS" "$live" "$id"
  done
}

# Can nginx reach the replica? Its address is among those nginx's DNS gives for the alias,
# and nginx's container opens a TCP connection to it. Prints why not, or nothing.
unreachable_why() {
  local address nginx
  address="$(live_address "$1")"
  [[ -n $address ]] || { echo "not live (not on the $live network as $LIVE_ALIAS)"; return; }
  nginx="$(nginx_container)"
  docker exec "$nginx" getent ahostsv4 "$LIVE_ALIAS" | awk '{ print $1 }' | grep -qx "$address" ||
    { echo "live at $address, but nginx's DNS does not list it"; return; }
  docker exec "$nginx" bash -c "exec 3<>/dev/tcp/$address/8000" 2>/dev/null ||
    echo "live at $address, but nginx cannot connect to it"
}

# /health/ready through nginx, as a load balancer asks it: prints the answer's release id, or
# fails on anything but a 200 (and tells why, unless $1 is "quiet").
ready_through_nginx() {
  local domain port body
  domain="$(env_value DOMAIN)"
  port="${HTTPS_PORT:-$(env_value HTTPS_PORT)}"
  port="${port:-443}"
  if ! body="$(curl --silent --show-error --fail --insecure --max-time 5 \
    --resolve "$domain:$port:127.0.0.1" "https://$domain:$port/health/ready" 2>&1)"; then
    [[ ${1:-} == quiet ]] || echo "deploy: gate: ${body:0:300}" >&2
    return 1
  fi
  sed -n 's/.*"releaseId": *"\([0-9a-f]*\)".*/\1/p' <<<"$body"
}

# What a load balancer sees once the new replicas are live: readiness through nginx, half a
# second apart, until GATE_CHECKS answers came from release $1 (nginx sees new replicas within
# a second or two, then shares requests among old and new). Every answer must be a 200, from
# either release: the first other answer fails the gate, so a bad release serves no longer
# than that. With $2 = "first" (nothing served before), answers may fail for up to 10 s,
# until nginx has resolved the first replicas.
gate() {
  local answer polls from_new=0 answered=""
  for ((polls = 0; polls < GATE_CHECKS * 8; polls++)); do
    if [[ ${2:-} == first && -z $answered ]] && ((polls < 20)); then
      answer="$(ready_through_nginx quiet)" && answered=yes
    else
      answer="$(ready_through_nginx)" || return 1
    fi
    if [[ $answer == "$1" ]] && ((++from_new >= GATE_CHECKS)); then return 0; fi
    sleep 0.5
  done
  echo "deploy: gate: $from_new of $GATE_CHECKS answers came from release $1 in $polls polls" >&2
  return 1
}

# Stop replicas gracefully, DRAIN_BATCH at a time: each closes its listener at once (nginx
# sends its requests to the others, nothing having been sent), finishes what it holds, and
# leaves DNS when it has stopped.
drain() {
  (($#)) || return 0
  local -a ids=("$@")
  local i
  say "draining $# replica(s) $(describe "$@")"
  for ((i = 0; i < ${#ids[@]}; i += DRAIN_BATCH)); do
    docker stop --time "$DRAIN_TIMEOUT" "${ids[@]:i:DRAIN_BATCH}" >/dev/null
  done
  say "drained at $(date +%T)"
  docker rm "$@" >/dev/null
}

# nginx's files (configuration, static) as a hash of content, so that a rebuild of the
# same commit's files is the same, whatever the layer timestamps.
nginx_content() {
  docker run --rm --entrypoint sh "$1" -c \
    'find /etc/nginx/nginx.conf /etc/nginx/snippets /etc/nginx/templates /docker-entrypoint.d /srv/static \
       -type f -exec md5sum {} + | sort -k 2 | md5sum'
}

release() { # release <migrate: yes|no> <action> <sha> [<web-digest> <nginx-digest> <backup-digest>]
  local migrate="$1" action="$2" sha="$3" current registry replicas live name digest_var
  local -a old new current_digests
  current="$(current_release)"
  read -r -a current_digests <<<"$(recorded_digests "$current")"
  registry="$(env_value REGISTRY)"
  replicas="$(env_value WEB_REPLICAS)"
  replicas="${replicas:-2}"
  use_release "${@:3}"
  mapfile -t old < <(web_replicas)

  step="pull"
  say "pulling release $sha${WEB_DIGEST:+ by digest}"
  compose pull --quiet web nginx backup ||
    die "the images of $sha could not be pulled" "check that CI pushed $registry/flask-kit-web:sha-$sha, flask-kit-nginx:sha-$sha and flask-kit-backup:sha-$sha${WEB_DIGEST:+ with the digests given}, and docker login"
  pin_and_check
  say "images: web@$WEB_DIGEST nginx@$NGINX_DIGEST backup@$BACKUP_DIGEST"
  if [[ $migrate == yes ]]; then
    step="migrate"
    if [[ -n "$(compose ps --quiet db)" ]]; then
      say "schema revision before: $(schema_revision)"
    else
      say "schema revision before: unknown (the database is not running yet)"
    fi
    say "migrating (the current release keeps serving)"
    compose run --rm --no-TTY migrate ||
      die "the migration of $sha exited non-zero" "read its output above; $current still serves"
    say "schema revision after: $(schema_revision)"
  fi

  if ((${#old[@]} == 0)); then
    step="first start"
    say "starting the whole stack on $sha"
    compose up --detach --wait --wait-timeout "$READY_TIMEOUT" --scale web="$replicas" ||
      die "the stack did not become healthy" "read \`$0 status\` and the logs (docker compose logs web nginx)"
    live="$(live_network)"
    mapfile -t new < <(web_replicas)
    go_live "${new[@]}"
    step="gate"
    gate "$sha" first || die "readiness through nginx did not pass" "read the gate lines above"
  else
    step="start"
    say "starting $replicas replica(s) of $sha beside ${#old[@]} of ${current:-the running release}"
    compose up --detach --no-deps --no-recreate --scale web=$((${#old[@]} + replicas)) web >/dev/null 2>&1 ||
      die "the new replicas could not be created" "read docker compose logs web"
    mapfile -t new < <(comm -13 <(printf '%s\n' "${old[@]}" | sort) <(web_replicas | sort))
    step="readiness"
    if ! wait_ready "${new[@]}"; then
      docker rm --force "${new[@]}" >/dev/null
      die "the new replicas of $sha failed: $not_ready (removed; $current still serves)" \
        "read their log lines above, fix the release, deploy again"
    fi

    step="go live"
    local running_nginx next_nginx
    running_nginx="$(docker inspect --format '{{.Image}}' "$(nginx_container)")"
    next_nginx="$(docker image inspect --format '{{.Id}}' "$(image_ref nginx)")"
    if [[ $running_nginx != "$next_nginx" && "$(nginx_content "$running_nginx")" != "$(nginx_content "$next_nginx")" ]]; then
      say "nginx's configuration or static files changed: replacing nginx"
      compose up --detach --no-deps --wait --wait-timeout "$READY_TIMEOUT" nginx >/dev/null 2>&1 ||
        die "the new nginx did not start" "read docker compose logs nginx"
    fi
    say "making the new replicas live beside the old"
    live="$(live_network)"
    # The old replicas too, should they not be live (a stack started before this script made
    # replicas live): nothing changes for those that are.
    if [[ -z $live ]] || ! go_live "${old[@]}" "${new[@]}"; then
      docker rm --force "${new[@]}" >/dev/null
      die "the new replicas could not join nginx's live network (removed; $current still serves)" \
        "check that nginx runs with docker-compose.prod.yml's networks (docker compose up --detach nginx)"
    fi

    say "live $(describe "${new[@]}")"
    step="gate"
    if ! gate "$sha"; then
      say "the gate failed: draining $sha's replicas; $current's never stopped serving"
      use_release "$current" "${current_digests[@]}"
      drain "${new[@]}" # gracefully: they were serving
      die "readiness through nginx failed once $sha was live; rolled back to $current automatically" \
        "read the gate lines above, fix the release, deploy again"
    fi
    step="drain"
    drain "${old[@]}"
  fi

  set_env_value TAG "$sha"
  for name in "${IMAGES[@]}"; do
    digest_var="${name^^}_DIGEST"
    set_env_value "$digest_var" "${!digest_var}"
  done
  record "$action" "$sha"
  # The release's backup image. Its schedule counts from the newest backup, so a restart
  # postpones nothing.
  step="backup"
  compose up --detach --no-deps backup >/dev/null 2>&1 ||
    die "the backup service of $sha did not start ($sha is live and recorded)" "read docker compose logs backup"
  prune
  say "$sha is live (${action})"
}

# Remove the images of releases older than the last KEEP_RELEASES, by tag and by digest (an
# image pulled by digest alone has no tag).
prune() {
  local keep registry image old_image
  keep="$(releases | head -n "$KEEP_RELEASES" | while read -r sha; do echo "sha-$sha"; recorded_digests "$sha" | tr ' ' '\n'; done |
    paste -sd '|')"
  registry="$(env_value REGISTRY)"
  for image in "${IMAGES[@]}"; do
    docker image ls --digests --format '{{.Repository}} {{.Tag}} {{.Digest}} {{.ID}}' "$registry/flask-kit-$image" |
      awk -v keep="^($keep)$" '$2 !~ keep && $3 !~ keep { print ($2 == "<none>" ? $4 : $1 ":" $2) }' | sort -u |
      while read -r old_image; do
        docker image rm "$old_image" >/dev/null 2>&1 || true # still used by a container: kept
      done
  done
}

# Every replica: its state, its image, ready or not (asked inside its container), and whether
# nginx reaches it. Exits 1 if any replica is not ready or not reached, naming the fix.
status() {
  local id problems=0 why
  live="$(live_network)"
  echo "current release: $(current_release)"
  echo "history (newest last):"
  if [[ -f $HISTORY ]]; then tail -n 10 "$HISTORY" | sed 's/^/  /'; fi
  echo "web replicas:"
  for id in $(web_replicas); do
    local state ready=not-ready
    state="$(docker inspect --format '{{.State.Status}} {{.Config.Image}}' "$id")"
    replica_ready "$id" && ready=ready
    why="$(unreachable_why "$id")"
    [[ $ready == ready && -z $why ]] || ((++problems))
    echo "  $(container_name "$id") $state $ready ${why:-live}"
  done
  if ((problems)); then
    echo "deploy: error: $problems replica(s) not serving; fix: $0 scale $(env_value WEB_REPLICAS) makes ready replicas live and replaces the rest" >&2
    return 1
  fi
}

# Run `want` replicas of the current release, all live. A replica that is ready but that nginx
# does not reach (started by a bare `docker compose up`, or cut off from the live network) is
# made live; one that is not ready is replaced.
scale() {
  local want="$1" current id
  local -a running=() ready_ones=() broken=() added=() digests=()
  current="$(current_release)"
  read -r -a digests <<<"$(recorded_digests "$current")"
  use_release "$current" "${digests[@]}"
  live="$(live_network)"
  [[ -n $live ]] || die "nginx is not running on the live network" "deploy a release first ($0 deploy <sha>)"
  step="scale"
  mapfile -t running < <(web_replicas)
  for id in "${running[@]}"; do
    if replica_ready "$id"; then ready_ones+=("$id"); else broken+=("$id"); fi
  done
  if ((${#broken[@]})); then
    say "replacing ${#broken[@]} replica(s) that are not ready: $(for id in "${broken[@]}"; do container_name "$id"; done | paste -sd ' ')"
  fi
  if ((want > ${#ready_ones[@]})); then
    compose up --detach --no-deps --no-recreate --scale web=$((${#running[@]} + want - ${#ready_ones[@]})) web \
      >/dev/null 2>&1 || die "the new replicas could not be created" "read docker compose logs web"
    mapfile -t added < <(comm -13 <(printf '%s\n' "${running[@]}" | sort) <(web_replicas | sort))
    wait_ready "${added[@]}" || {
      docker rm --force "${added[@]}" >/dev/null
      die "the added replicas failed: $not_ready (removed)" "read their log lines above"
    }
    ready_ones+=("${added[@]}")
  fi
  for id in "${ready_ones[@]:0:want}"; do
    [[ -n "$(live_address "$id")" ]] || say "making $(container_name "$id") live: nginx did not reach it"
  done
  go_live "${ready_ones[@]:0:want}"
  drain "${ready_ones[@]:want}" "${broken[@]}"
  set_env_value WEB_REPLICAS "$want"
  say "$want web replica(s) of $current"
}

main() {
  local command="${1:-}"
  case "$command" in
    -h | --help)
      usage
      exit 0
      ;;
    deploy | rollback | status | scale) ;;
    *)
      usage >&2
      exit 2
      ;;
  esac
  [[ -f docker-compose.yml && -f docker-compose.prod.yml ]] ||
    die "the Compose files are not here" "run in the directory that holds docker-compose.yml and docker-compose.prod.yml (now: $PWD)"
  [[ -f .env ]] || die ".env is missing" "create it first (docs/deploy.md, section 2)"
  if [[ $command == status ]]; then
    status
    return
  fi
  local live # the live network's name, once nginx runs

  # One deploy at a time: the lock dies with this process, so a crash cannot leave it held.
  exec 9>>"$LOCK"
  flock --nonblock 9 || die "another deploy holds the lock" "wait for it: $(cat "$LOCK")"
  printf 'pid %s (%s) since %s: %s\n' "$$" "${USER:-$(id -un)}" "$(date -u +%H:%M:%SZ)" "$*" >"$LOCK"
  trap ': >"$LOCK"' EXIT # the holder's name goes with it, however this ends

  case "$command" in
    deploy)
      [[ "${2:-}" =~ ^[0-9a-f]{7,40}$ ]] || die "'${2:-}' is not a git commit SHA" "pass 7 to 40 lowercase hex digits"
      (($# == 2 || $# == 5)) ||
        die "$(($# - 2)) digest(s) given" "pass none, or the web, nginx and backup digests, in that order"
      local digest
      for digest in "${@:3}"; do
        [[ $digest =~ $DIGEST ]] || die "'$digest' is not an image digest" "pass sha256:<64 lowercase hex digits>"
      done
      release yes deploy "${@:2}"
      ;;
    rollback)
      local target="${2:-}"
      if [[ -z $target ]]; then
        target="$(releases | sed -n 2p)"
        [[ -n $target ]] || die "no earlier release is recorded" "deploy a commit instead"
      else
        releases | grep -qx "$target" || die "$target is not a recorded release" "pick one from \`$0 status\`"
      fi
      local -a digests
      read -r -a digests <<<"$(recorded_digests "$target")"
      release no rollback "$target" "${digests[@]}"
      ;;
    scale)
      [[ $# -eq 2 && "$2" =~ ^[1-9][0-9]*$ ]] || die "'${2:-}' is not a replica count" "pass a number from 1 up"
      scale "$2"
      ;;
  esac
}

main "$@"
