#!/usr/bin/env bash
### All that CI's deploy key can run on the server: deploy, roll back, status (sshd's forced command).
### Usage: scripts/deploy-command.sh --authorized-key <public-key-file> [<deploy dir>]
###   Prints the authorized_keys line that ties the key to this script in <deploy dir>
###   (default /srv/flask-kit), with `restrict`: no shell, no pty, no forwarding. As the admin,
###   after copying this script once into the deploy directory (beside deploy.sh and .env):
###     scripts/deploy-command.sh --authorized-key ci_deploy.pub >> ~deploy/.ssh/authorized_keys
### Run by sshd (no arguments), it runs what $SSH_ORIGINAL_COMMAND asks only if it is exactly:
###   deploy <sha> <web-digest> <nginx-digest> <backup-digest>
###                       pull $REGISTRY/flask-kit-web@<web-digest> (REGISTRY from .env), check
###                       that it was built from <sha> (label org.opencontainers.image.revision),
###                       install the server files it carries in /release (the Compose files,
###                       deploy.sh, renew-certificates.sh, make-secrets.sh), then run
###                       ./deploy.sh deploy with the same arguments
###   rollback [<sha>]    ./deploy.sh rollback [<sha>]
###   status              ./deploy.sh status
###   <sha> is 40 lowercase hex digits; a digest is sha256: and 64 of them. Anything else is
###   refused with exit 2. Each command, accepted or refused, is logged on stderr: sshd passes
###   it to the client, so it is CI's log.
### Environment: DOCKER  the docker command (docker), from the server's own environment
set -o errexit -o nounset -o pipefail
# No word of the client's is ever globbed.
set -o noglob
# Ranges like [a-f] mean bytes, whatever locale the client sent (sshd accepts LANG and LC_*).
LC_ALL=C

SHA='^[0-9a-f]{40}$'
DIGEST='^sha256:[0-9a-f]{64}$'
# A public key as ssh-keygen writes it: type, base64, comment. Options would come first.
KEY_LINE='^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com) [A-Za-z0-9+/]+={0,3}( [[:print:]]*)?$'
ALLOWED='deploy <sha> <web-digest> <nginx-digest> <backup-digest> | rollback [<sha>] | status'
# The server files a release carries; deploy-command.sh is not one of them (see install_release).
RELEASE_FILES=(docker-compose.yml docker-compose.prod.yml docker-compose.secrets.yml
  deploy.sh renew-certificates.sh make-secrets.sh)
# deploy.sh's lock: a deploy that holds it may be reading the files a release replaces.
LOCK=.deploy.lock

usage() { sed -n 's/^### \{0,1\}//p' "$0"; }
say() { echo "deploy-command: $*" >&2; }
die() {
  echo "deploy-command: error: $1; fix: $2" >&2
  exit 1
}
refuse() {
  echo "deploy-command: refused: $1; allowed: $ALLOWED" >&2
  exit 2
}
# The client's words, shell-quoted: never raw into CI's terminal.
quoted() { printf '%q' "$1"; }

read -r -a docker_cmd <<<"${DOCKER:-docker}"
# `command`: the binary, not this function (which would call itself)
docker() { command "${docker_cmd[@]}" "$@"; }

authorized_key() {
  local key_file="$1" dir="${2:-/srv/flask-kit}" line
  # sshd hands command="..." to the account's shell: anything past these characters would be
  # shell syntax there, or end the quotes.
  [[ $dir =~ ^/[A-Za-z0-9._/-]*$ ]] ||
    die "$(quoted "$dir") is not a plain absolute directory" "pass one made of letters, digits, . _ - and /"
  [[ -f $key_file && -r $key_file ]] || die "$(quoted "$key_file") is not a readable file" "pass the public key file (ci_deploy.pub)"
  line="$(grep . "$key_file" || true)"
  if [[ $line == *$'\n'* ]] || ! [[ $line =~ $KEY_LINE ]] || ! ssh-keygen -l -f "$key_file" >/dev/null 2>&1; then
    die "$(quoted "$key_file") is not one public key line (type, key, comment; no options)" \
      "pass the .pub file ssh-keygen wrote (ci_deploy.pub), not the private key"
  fi
  printf 'restrict,command="%s/deploy-command.sh" %s\n' "${dir%/}" "$line"
}

# The release's server files, from the web image CI pushed for <sha>, moved into place.
container=""
staging=""
# Runs while the lock is held: the holder's name goes with it, as deploy.sh does.
cleanup() {
  [[ -z $container ]] || docker rm "$container" >/dev/null || true
  [[ -z $staging ]] || rm -rf -- "$staging"
  : >"$LOCK"
}
install_release() {
  local sha="$1" web_digest="$2" registry image revision file
  local -a missing=()
  [[ -f .env ]] || die ".env is missing in $PWD" "create it first (docs/deploy.md, section 2)"
  registry="$(sed -n 's/^REGISTRY=//p' .env | tail -n 1)"
  [[ -n $registry ]] || die "no REGISTRY= line in $PWD/.env" "add one, e.g. REGISTRY=ghcr.io/<owner>"
  # deploy.sh's lock, as it takes it: no file is replaced under a running deploy.
  exec 9>>"$LOCK"
  flock --nonblock 9 || die "another deploy holds the lock" "wait for it: $(cat "$LOCK")"
  printf 'pid %s (deploy-command) since %s: deploy %s\n' "$$" "$(date -u +%H:%M:%SZ)" "$sha" >"$LOCK"
  trap cleanup EXIT

  image="$registry/flask-kit-web@$web_digest"
  say "pulling $image"
  docker pull --quiet "$image" >&2 ||
    die "$image could not be pulled" "check that CI pushed that digest, and docker login on this server"
  revision="$(docker image inspect --format '{{index .Config.Labels "org.opencontainers.image.revision"}}' "$image")" ||
    die "$image could not be inspected" "read docker's error above"
  [[ $revision == "$sha" ]] ||
    die "$web_digest was built from $(quoted "$revision"), not $sha: the digest is not that commit's" \
      "pass the digests CI pushed for $sha"

  # Inside the deploy directory: the same filesystem, so each mv below is one atomic rename.
  staging="$(mktemp -d "$PWD/.release.XXXXXX")"
  container="$(docker create "$image")" || die "no container could be created from $image" "read docker's error above"
  docker cp "$container:/release/." "$staging" >&2 ||
    die "the release files could not be copied out of $image" "build it with the server files in /release (Dockerfile)"
  docker rm "$container" >/dev/null
  container=""
  for file in "${RELEASE_FILES[@]}"; do
    [[ -f $staging/$file && ! -L $staging/$file ]] || missing+=("$file")
  done
  ((${#missing[@]} == 0)) ||
    die "$image lacks ${missing[*]} in /release (as regular files)" "build it with every server file in /release (Dockerfile)"
  # A rename, never a write in place: a running deploy.sh keeps reading its old file.
  # deploy-command.sh is left alone on purpose: it alone decides what the key may do, so the
  # admin installs it, and no image (whoever pushed it) can widen it.
  for file in "${RELEASE_FILES[@]}"; do
    mv -f -- "$staging/$file" "./$file"
  done
  cleanup
  trap - EXIT
  say "installed the server files of $sha"
  # deploy.sh takes the lock itself, on a descriptor of its own.
  exec 9>&-
}

forced_command() {
  local command="${SSH_ORIGINAL_COMMAND:-}" word
  local -a words
  [[ -n $command ]] || refuse "no command (this key gets no shell)"
  # read stops at a newline: a second line would go unseen.
  [[ $command != *[[:cntrl:]]* ]] || refuse "$(quoted "$command") holds a control character"
  read -r -a words <<<"$command"
  case "${words[0]:-}" in
    deploy)
      ((${#words[@]} == 5)) || refuse "deploy takes 4 arguments, got $((${#words[@]} - 1)): $(quoted "$command")"
      [[ ${words[1]} =~ $SHA ]] || refuse "$(quoted "${words[1]}") is not a commit SHA (40 lowercase hex digits)"
      for word in "${words[@]:2}"; do
        [[ $word =~ $DIGEST ]] || refuse "$(quoted "$word") is not an image digest (sha256: and 64 lowercase hex digits)"
      done
      ;;
    rollback)
      ((${#words[@]} <= 2)) || refuse "rollback takes at most 1 argument, got $((${#words[@]} - 1)): $(quoted "$command")"
      if ((${#words[@]} == 2)) && ! [[ ${words[1]} =~ $SHA ]]; then
        refuse "$(quoted "${words[1]}") is not a commit SHA (40 lowercase hex digits)"
      fi
      ;;
    status)
      ((${#words[@]} == 1)) || refuse "status takes no argument: $(quoted "$command")"
      ;;
    *) refuse "$(quoted "$command") is not an allowed command" ;;
  esac
  say "accepted from ${SSH_CONNECTION%% *}: ${words[*]}"

  cd "$(dirname "$(readlink -f "$0")")"
  if [[ ${words[0]} == deploy ]]; then
    install_release "${words[1]}" "${words[2]}"
  fi
  exec ./deploy.sh "${words[@]}"
}

# sshd runs the forced command with no arguments, whatever the client sends: its words are in
# SSH_ORIGINAL_COMMAND only. Arguments mean the admin, at a shell.
if (($# == 0)) && [[ -n ${SSH_CONNECTION:-} ]]; then
  forced_command
fi
case "${1:-}" in
  --authorized-key)
    (($# == 2 || $# == 3)) || { usage >&2; exit 2; }
    authorized_key "$2" "${3:-}"
    ;;
  -h | --help) usage ;;
  *)
    usage >&2
    exit 2
    ;;
esac
