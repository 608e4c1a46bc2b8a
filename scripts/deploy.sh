#!/usr/bin/env bash
### Deploy one release, or roll back to one: the image CI pushed for a commit.
### Usage: scripts/deploy.sh <git-sha>
###   Run on the server from the checkout that holds the Compose files and .env
###   (docs/deploy.md). Each step stops the deploy if it fails:
###     1. check out <git-sha>: the Compose files and nginx/ of that release
###     2. set TAG=<git-sha> in .env, so every later command runs that image
###     3. pull the image
###     4. run the migrations, a one-off container (concurrent runs serialize)
###     5. up -d --wait: replace web, restart nginx, wait until all are healthy
###   Rolling back is the same command with the previous SHA; it does not undo
###   migrations (keep them backward compatible, see docs/deploy.md).
###   COMPOSE  the Compose command (default: docker compose)
###   GIT      the git command (default: git)
set -o errexit -o nounset -o pipefail

usage() { sed -n 's/^### \{0,1\}//p' "$0"; }
die() {
  echo "deploy: error: $*" >&2
  exit 1
}

main() {
  if [[ $# -ne 1 ]]; then
    usage >&2
    exit 2
  fi
  case "$1" in
    -h | --help)
      usage
      exit 0
      ;;
  esac
  local sha="$1"
  [[ "$sha" =~ ^[0-9a-f]{7,40}$ ]] || die "'$sha' is not a git commit SHA (7 to 40 lowercase hex digits)"
  [[ -f docker-compose.yml && -f docker-compose.prod.yml ]] ||
    die "run from the directory that holds docker-compose.yml and docker-compose.prod.yml (now: $PWD)"
  [[ -f .env ]] || die ".env is missing: create it first (docs/deploy.md, section 2)"

  local -a git compose
  read -r -a git <<<"${GIT:-git}"
  read -r -a compose <<<"${COMPOSE:-docker compose}"
  compose+=(--file docker-compose.yml --file docker-compose.prod.yml)

  echo "deploy: checking out $sha"
  "${git[@]}" fetch --quiet origin
  "${git[@]}" checkout --quiet --detach "$sha"

  echo "deploy: TAG=$sha in .env"
  if grep -q '^TAG=' .env; then
    sed -i "s/^TAG=.*/TAG=$sha/" .env
  else
    echo "TAG=$sha" >>.env
  fi

  echo "deploy: pulling the image"
  "${compose[@]}" pull web migrate
  echo "deploy: migrating"
  "${compose[@]}" run --rm migrate
  echo "deploy: starting $sha"
  "${compose[@]}" up -d --wait
  echo "deploy: $sha is up"
}

# main is read whole before it runs, so the checkout above can replace this file safely.
main "$@"
exit
