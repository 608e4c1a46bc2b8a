#!/usr/bin/env bash
### Stand-in for the official redis image's entrypoint: drop root, keep protected mode off.
### Usage: docker-entrypoint.sh redis-server [config-file] [--option value ...]
set -o errexit -o nounset -o pipefail

if [[ "${1:-}" == "redis-server" && "$(id -u)" == "0" ]]; then
  exec setpriv --reuid=redis --regid=redis --init-groups "$@" --protected-mode no
fi
exec "$@"
