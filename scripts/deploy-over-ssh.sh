#!/usr/bin/env bash
### Deploy one commit on the server over SSH: the command CI's deploy job runs.
### Usage: scripts/deploy-over-ssh.sh <git-sha>
###   Copies the Compose files (docker-compose.secrets.yml too, used only when
###   DEPLOY_COMPOSE_FILES names it), deploy.sh and renew-certificates.sh into
###   DEPLOY_PATH on the server (all it needs besides its .env: no checkout), then
###   runs `deploy.sh deploy <sha>` there and exits with its status.
### Environment:
###   DEPLOY_HOST              the server (required)
###   DEPLOY_USER              an account in the docker group there (required)
###   DEPLOY_SSH_KEY_FILE      its private key (required)
###   DEPLOY_KNOWN_HOSTS_FILE  the server's host key line(s) (required: no trust on first use)
###   DEPLOY_PATH              the deploy directory (default /srv/flask-kit)
###   DEPLOY_PORT              SSH port (default 22)
set -o errexit -o nounset -o pipefail

usage() { sed -n 's/^### \{0,1\}//p' "$0"; }
die() {
  echo "deploy-over-ssh: error: $*" >&2
  exit 1
}

if [[ $# -ne 1 || "$1" == -h || "$1" == --help ]]; then
  usage
  [[ $# -eq 1 ]] && exit 0
  exit 2
fi
sha="$1"
[[ "$sha" =~ ^[0-9a-f]{7,40}$ ]] || die "'$sha' is not a git commit SHA (7 to 40 lowercase hex digits)"
for name in DEPLOY_HOST DEPLOY_USER DEPLOY_SSH_KEY_FILE DEPLOY_KNOWN_HOSTS_FILE; do
  [[ -n "${!name:-}" ]] || die "$name is not set; fix: set it (docs/deploy.md, \"Continuous deployment\")"
done
cd "$(dirname "$0")/.."
path="${DEPLOY_PATH:-/srv/flask-kit}"
options=(-o BatchMode=yes -o StrictHostKeyChecking=yes -o "UserKnownHostsFile=$DEPLOY_KNOWN_HOSTS_FILE"
  -i "$DEPLOY_SSH_KEY_FILE")
target="$DEPLOY_USER@$DEPLOY_HOST"

scp -q "${options[@]}" -P "${DEPLOY_PORT:-22}" docker-compose.yml docker-compose.prod.yml docker-compose.secrets.yml \
  scripts/deploy.sh scripts/make-secrets.sh \
  scripts/renew-certificates.sh "$target:$path/" || die "copying the deploy files to $target:$path failed; fix: check the path and the key"
# shellcheck disable=SC2029 # path and sha are meant to expand here, on the client
ssh "${options[@]}" -p "${DEPLOY_PORT:-22}" "$target" "cd '$path' && ./deploy.sh deploy '$sha'"
