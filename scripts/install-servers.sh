#!/usr/bin/env bash
### Make sure the server binaries the test suite runs for real are installed.
### Usage: scripts/install-servers.sh
###   As root, installs what is missing with apt-get. Otherwise prints the exact
###   apt-get command to run and exits 1.
set -o errexit -o nounset -o pipefail

usage() { sed -n 's/^### \{0,1\}//p' "$0"; }
if [[ $# -gt 0 ]]; then
  usage
  [[ "$1" == "-h" || "$1" == "--help" ]] && exit 0
  exit 2
fi

# command the suite needs -> Debian package that provides it
declare -A needed=(
  [initdb]=postgresql
  [redis-server]=redis-server
  [nginx]=nginx
  [openssl]=openssl
  [curl]=curl
  [dockerd]=docker.io
  [debootstrap]=debootstrap
  # a real registry for release images, and an SSH server to deploy over (loopback only)
  [docker-registry]=docker-registry
  [sshd]=openssh-server
  # load generators for the benchmarks
  [wrk]=wrk
  [hey]=hey
  # off-host backup copies, and SQLite's .backup for the embedded setup
  [restic]=restic
  [sqlite3]=sqlite3
  # a real ACME server and client: certificates issued and renewed through our nginx
  [pebble]=pebble
  [certbot]=certbot
  # a TLS-terminating load balancer in front of nginx, probing by address
  [haproxy]=haproxy
  # a real Prometheus scraping the native stack, and promtool for the rules and their tests
  [prometheus]=prometheus
  [promtool]=prometheus
)

have() {
  command -v "$1" >/dev/null 2>&1 && return 0
  # Debian keeps the PostgreSQL binaries off PATH, under /usr/lib/postgresql/<major>/bin.
  compgen -G "/usr/lib/postgresql/*/bin/$1" >/dev/null
}

missing=()
for cmd in "${!needed[@]}"; do
  have "$cmd" || missing+=("${needed[$cmd]}")
done

# debootstrap verifies Debian's release signature with this keyring; Ubuntu lacks it by default.
[[ -f /usr/share/keyrings/debian-archive-keyring.gpg ]] || missing+=(debian-archive-keyring)

[[ ${#missing[@]} -eq 0 ]] && exit 0

mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
if [[ $(id -u) -ne 0 ]]; then
  echo "error: missing server packages: ${missing[*]}" >&2
  echo "fix: sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi

echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Installing must not start the packages' own daemons (redis on 6379, nginx on 80, sshd on
# 22): the suite starts its own on free loopback ports. invoke-rc.d asks policy-rc.d first.
policy=/usr/sbin/policy-rc.d
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod +x "$policy"
  trap 'rm -f "$policy"' EXIT
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
