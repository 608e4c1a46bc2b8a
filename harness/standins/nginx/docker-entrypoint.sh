#!/usr/bin/env bash
### Stand-in for the official nginx image's /docker-entrypoint.sh: when the
### command is nginx, run /docker-entrypoint.d/*.sh (executable ones) and
### source *.envsh in name order, then exec the command.
### Usage: /docker-entrypoint.sh nginx -g 'daemon off;'
set -o errexit -o nounset -o pipefail

if [[ "${1:-}" == "nginx" || "${1:-}" == "nginx-debug" ]]; then
  shopt -s nullglob
  for f in /docker-entrypoint.d/*; do
    case "$f" in
      *.envsh) [[ -x "$f" ]] && { echo "$0: sourcing $f"; # shellcheck disable=SC1090
        . "$f"; } ;;
      *.sh) if [[ -x "$f" ]]; then echo "$0: running $f"; "$f"; else echo "$0: ignoring $f, not executable"; fi ;;
      *) echo "$0: ignoring $f" ;;
    esac
  done
  echo "$0: configuration complete; ready for start up"
fi
exec "$@"
