#!/usr/bin/env bash
### Deploy, roll back or ask the status over SSH: the command CI's deploy job runs.
### Usage: scripts/deploy-over-ssh.sh deploy <sha> <web-digest> <nginx-digest> <backup-digest> | rollback [<sha>] | status
###   Sends the command to the server, where the deploy key runs nothing but
###   deploy-command.sh (its forced command): that installs the release's server
###   files from the web image and runs deploy.sh there. Nothing is copied from
###   here. <sha> is 40 lowercase hex digits, a digest sha256: and 64 of them:
###   anything else is refused here, before any connection. Exits with ssh's
###   status: the remote command's, or 255 if SSH itself failed.
### Environment:
###   DEPLOY_HOST              the server (required)
###   DEPLOY_USER              the account the key logs into, where it runs only deploy-command.sh (required)
###   DEPLOY_SSH_KEY_FILE      its private key (required)
###   DEPLOY_KNOWN_HOSTS_FILE  the server's host key line(s) (required: no trust on first use)
###   DEPLOY_PORT              SSH port (default 22)
set -o errexit -o nounset -o pipefail

# The same as deploy-command.sh's: a typo fails here, not on the server.
SHA='^[0-9a-f]{40}$'
DIGEST='^sha256:[0-9a-f]{64}$'

usage() { sed -n 's/^### \{0,1\}//p' "$0"; }
die() {
  echo "deploy-over-ssh: error: $*" >&2
  exit 1
}
bad_usage() {
  echo "deploy-over-ssh: error: $1" >&2
  usage >&2
  exit 2
}

case "${1:-}" in
  -h | --help)
    usage
    exit 0
    ;;
  deploy)
    (($# == 5)) || bad_usage "deploy takes a sha and 3 digests, got $(($# - 1)) argument(s)"
    [[ $2 =~ $SHA ]] || bad_usage "'$2' is not a commit SHA (40 lowercase hex digits)"
    for digest in "$3" "$4" "$5"; do
      [[ $digest =~ $DIGEST ]] || bad_usage "'$digest' is not an image digest (sha256: and 64 lowercase hex digits)"
    done
    ;;
  rollback)
    (($# <= 2)) || bad_usage "rollback takes at most a sha"
    [[ $# == 1 || $2 =~ $SHA ]] || bad_usage "'$2' is not a commit SHA (40 lowercase hex digits)"
    ;;
  status)
    (($# == 1)) || bad_usage "status takes no argument"
    ;;
  *) bad_usage "'${1:-}' is not a command" ;;
esac
for name in DEPLOY_HOST DEPLOY_USER DEPLOY_SSH_KEY_FILE DEPLOY_KNOWN_HOSTS_FILE; do
  [[ -n "${!name:-}" ]] || die "$name is not set; fix: set it (docs/ci.md, \"Secrets and variables\")"
done

# IdentitiesOnly: this key alone, never one from an agent that the account might accept for
# a shell. The forced command ignores forwardings and a pty anyway; asking for none keeps the
# log free of refusals.
exec ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o "UserKnownHostsFile=$DEPLOY_KNOWN_HOSTS_FILE" \
  -o IdentitiesOnly=yes -o ClearAllForwardings=yes -T \
  -i "$DEPLOY_SSH_KEY_FILE" -p "${DEPLOY_PORT:-22}" "$DEPLOY_USER@$DEPLOY_HOST" "$@"
