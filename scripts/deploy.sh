#!/usr/bin/env bash
### Release, roll back and scale on one server, without dropping a request.
### Usage: scripts/deploy.sh deploy <git-sha>
###        scripts/deploy.sh rollback [<git-sha>]
###        scripts/deploy.sh status
###        scripts/deploy.sh scale <replicas>
###   Run where docker-compose.yml, docker-compose.prod.yml and .env live (no
###   source checkout needed). A release is the two images CI pushed for one
###   commit: $REGISTRY/flask-kit-web:<sha>, flask-kit-nginx:<sha> and
###   flask-kit-backup:<sha>.
###   deploy <sha>    pull the images, migrate (one-off), start the new web
###                   replicas beside the old ones, wait until each is ready,
###                   switch nginx to them (a reload), check readiness through
###                   nginx, drain the old replicas, record the release.
###                   A failure before the switch removes the new replicas; a
###                   failed check after it switches back. Either way the old
###                   release keeps serving and stays recorded, and it exits 1.
###   rollback [sha]  the same, to the release before the current one (or to
###                   any recorded <sha>), without migrating.
###   status          the current release, the history, each replica's health.
###   scale <n>       run n web replicas of the current release.
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

record() { printf '%s %s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$1" "$2" >>"$HISTORY"; }

web_replicas() { compose ps --quiet web; }
container_name() { docker inspect --format '{{.Name}}' "$1" | sed 's|^/||'; }

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

# Point nginx at exactly these replicas, then reload: old workers finish their requests.
switch_nginx() {
  local id lines=""
  for id in "$@"; do lines+="server $(container_name "$id"):8000;"$'\n'; done
  printf '%s' "$lines" | compose exec -T nginx sh -c 'cat >/etc/nginx/upstream.d/web.conf.new &&
    mv /etc/nginx/upstream.d/web.conf.new /etc/nginx/upstream.d/web.conf && nginx -t -q && nginx -s reload'
}

# /health/ready through nginx, as a load balancer asks it: prints the answer's release id,
# or fails (and tells why) on anything but a 200.
ready_through_nginx() {
  local domain port body
  domain="$(env_value DOMAIN)"
  port="${HTTPS_PORT:-$(env_value HTTPS_PORT)}"
  port="${port:-443}"
  if ! body="$(curl --silent --show-error --fail --insecure --max-time 5 \
    --resolve "$domain:$port:127.0.0.1" "https://$domain:$port/health/ready" 2>&1)"; then
    echo "deploy: gate: ${body:0:300}" >&2
    return 1
  fi
  sed -n 's/.*"releaseId": *"\([0-9a-f]*\)".*/\1/p' <<<"$body"
}

# What a load balancer sees after a switch: once nginx's new workers answer (a reload takes
# effect within moments; the old workers answer until then), GATE_CHECKS answers in a row, a
# second apart, each 200 from release $1. The first other answer fails the gate, so a bad
# release serves no longer than that.
gate() {
  local check answer="" waited
  for ((waited = 0; waited < 20; waited++)); do
    answer="$(ready_through_nginx)" || return 1
    [[ $answer == "$1" ]] && break
    sleep 0.5
  done
  [[ $answer == "$1" ]] || {
    echo "deploy: gate: nginx still answers with release ${answer:-?} after 10 s" >&2
    return 1
  }
  for ((check = 2; check <= GATE_CHECKS; check++)); do
    sleep 1
    answer="$(ready_through_nginx)" || return 1
    [[ $answer == "$1" ]] || {
      echo "deploy: gate: check $check of $GATE_CHECKS answered by release ${answer:-?}" >&2
      return 1
    }
  done
}

drain() {
  (($#)) || return 0
  say "draining ${#@} old replica(s)"
  docker stop --time "$DRAIN_TIMEOUT" "$@" >/dev/null
  docker rm "$@" >/dev/null
}

# nginx's files (configuration, static) as a hash of content, so that a rebuild of the
# same commit's files is the same, whatever the layer timestamps.
nginx_content() {
  docker run --rm --entrypoint sh "$1" -c \
    'find /etc/nginx/nginx.conf /etc/nginx/snippets /etc/nginx/templates /docker-entrypoint.d /srv/static \
       -type f -exec md5sum {} + | sort -k 2 | md5sum'
}

release() { # release <sha> <migrate: yes|no> <action>
  local sha="$1" migrate="$2" action="$3" current registry replicas
  local -a old new
  current="$(current_release)"
  registry="$(env_value REGISTRY)"
  replicas="$(env_value WEB_REPLICAS)"
  replicas="${replicas:-2}"
  # TAG in the environment wins over .env: every Compose command below runs the new release
  export TAG="$sha"
  mapfile -t old < <(web_replicas)

  step="pull"
  say "pulling release $sha"
  compose pull --quiet web nginx backup ||
    die "the images of $sha could not be pulled" "check that CI pushed $registry/flask-kit-web:$sha, flask-kit-nginx:$sha and flask-kit-backup:$sha, and docker login"
  if [[ $migrate == yes ]]; then
    step="migrate"
    say "migrating (the current release keeps serving)"
    compose run --rm --no-TTY migrate ||
      die "the migration of $sha exited non-zero" "read its output above; $current still serves"
  fi

  if ((${#old[@]} == 0)); then
    step="first start"
    say "starting the whole stack on $sha"
    compose up --detach --wait --wait-timeout "$READY_TIMEOUT" --scale web="$replicas" ||
      die "the stack did not become healthy" "read \`$0 status\` and the logs (docker compose logs web nginx)"
    step="gate"
    gate "$sha" || die "readiness through nginx did not pass" "read the gate lines above"
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

    step="switch"
    local running_nginx next_nginx
    running_nginx="$(docker inspect --format '{{.Image}}' "$(compose ps --quiet nginx)")"
    next_nginx="$(docker image inspect --format '{{.Id}}' "$registry/flask-kit-nginx:$sha")"
    if [[ $running_nginx != "$next_nginx" && "$(nginx_content "$running_nginx")" != "$(nginx_content "$next_nginx")" ]]; then
      say "nginx's configuration or static files changed: replacing nginx"
      compose up --detach --no-deps --wait --wait-timeout "$READY_TIMEOUT" nginx >/dev/null 2>&1 ||
        die "the new nginx did not start" "read docker compose logs nginx"
    fi
    say "switching nginx to the new replicas"
    if ! switch_nginx "${new[@]}"; then
      docker rm --force "${new[@]}" >/dev/null
      die "nginx refused the switch (removed the new replicas; $current still serves)" "read the nginx lines above"
    fi

    step="gate"
    if ! gate "$sha"; then
      say "the gate failed: switching back to $current"
      export TAG="$current"
      switch_nginx "${old[@]}"
      drain "${new[@]}" # gracefully: they were serving
      die "readiness through nginx failed after the switch; rolled back to $current automatically" \
        "read the gate lines above, fix the release, deploy again"
    fi
    step="drain"
    drain "${old[@]}"
  fi

  set_env_value TAG "$sha"
  record "$action" "$sha"
  # The release's backup image. Its schedule counts from the newest backup, so a restart
  # postpones nothing.
  step="backup"
  compose up --detach --no-deps backup >/dev/null 2>&1 ||
    die "the backup service of $sha did not start ($sha is live and recorded)" "read docker compose logs backup"
  prune
  say "$sha is live (${action})"
}

prune() {
  local keep registry image old_image
  keep="$(releases | head -n "$KEEP_RELEASES" | paste -sd '|')"
  registry="$(env_value REGISTRY)"
  for image in "$registry/flask-kit-web" "$registry/flask-kit-nginx" "$registry/flask-kit-backup"; do
    docker image ls --format '{{.Repository}}:{{.Tag}}' "$image" | { grep -Ev ":($keep)$" || true; } |
      while read -r old_image; do
        docker image rm "$old_image" >/dev/null 2>&1 || true # still used by a container: kept
      done
  done
}

status() {
  local id
  echo "current release: $(current_release)"
  echo "history (newest last):"
  if [[ -f $HISTORY ]]; then tail -n 10 "$HISTORY" | sed 's/^/  /'; fi
  echo "web replicas:"
  for id in $(web_replicas); do
    local state ready=not-ready
    state="$(docker inspect --format '{{.State.Status}} {{.Config.Image}}' "$id")"
    replica_ready "$id" && ready=ready
    echo "  $(container_name "$id") $state $ready"
  done
}

scale() {
  local want="$1" current
  local -a running keep
  current="$(current_release)"
  export TAG="$current"
  mapfile -t running < <(web_replicas)
  step="scale"
  if ((want > ${#running[@]})); then
    compose up --detach --no-deps --no-recreate --scale web="$want" web >/dev/null 2>&1 ||
      die "the new replicas could not be created" "read docker compose logs web"
    mapfile -t keep < <(web_replicas)
    local -a added
    mapfile -t added < <(comm -13 <(printf '%s\n' "${running[@]}" | sort) <(printf '%s\n' "${keep[@]}" | sort))
    wait_ready "${added[@]}" || {
      docker rm --force "${added[@]}" >/dev/null
      die "the added replicas failed: $not_ready (removed)" "read their log lines above"
    }
    switch_nginx "${keep[@]}"
  elif ((want < ${#running[@]})); then
    keep=("${running[@]:0:want}")
    switch_nginx "${keep[@]}"
    drain "${running[@]:want}"
  fi
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

  # One deploy at a time: the lock dies with this process, so a crash cannot leave it held.
  exec 9>>"$LOCK"
  flock --nonblock 9 || die "another deploy holds the lock" "wait for it: $(cat "$LOCK")"
  printf 'pid %s (%s) since %s: %s\n' "$$" "${USER:-$(id -un)}" "$(date -u +%H:%M:%SZ)" "$*" >"$LOCK"
  trap ': >"$LOCK"' EXIT # the holder's name goes with it, however this ends

  case "$command" in
    deploy)
      [[ $# -eq 2 && "$2" =~ ^[0-9a-f]{7,40}$ ]] || die "'${2:-}' is not a git commit SHA" "pass 7 to 40 lowercase hex digits"
      release "$2" yes deploy
      ;;
    rollback)
      local target="${2:-}"
      if [[ -z $target ]]; then
        target="$(releases | sed -n 2p)"
        [[ -n $target ]] || die "no earlier release is recorded" "deploy a commit instead"
      else
        releases | grep -qx "$target" || die "$target is not a recorded release" "pick one from \`$0 status\`"
      fi
      release "$target" no rollback
      ;;
    scale)
      [[ $# -eq 2 && "$2" =~ ^[1-9][0-9]*$ ]] || die "'${2:-}' is not a replica count" "pass a number from 1 up"
      scale "$2"
      ;;
  esac
}

main "$@"
