#!/usr/bin/env bash
### Renew the Let's Encrypt certificates that are due, then reload nginx.
### Usage: scripts/renew-certificates.sh [--dry-run]
###   Run on the server from the directory holding the Compose files and .env,
###   daily from root's crontab. Pick a minute and hour of your own rather than
###   the 17 3 below: the schedule is what spreads the load on Let's Encrypt.
###     17 3 * * * cd /srv/flask-kit && ./renew-certificates.sh >>/var/log/flask-kit-renew.log 2>&1
###   certbot renews only certificates close to expiry and does nothing
###   otherwise, so a daily run is cheap. The deploy hook recorded when the
###   certificate was issued (docs/certificates.md) copies a renewed one into
###   the volume nginx reads. nginx is reloaded only when that file changed:
###   a reload closes idle client keep-alive connections, and a request sent
###   on one at that moment gets no answer, so it happens every ~60 days, not
###   daily.
###   --dry-run  rehearse against Let's Encrypt's staging server; changes nothing
###   COMPOSE    the Compose command (default: docker compose)
set -o errexit -o nounset -o pipefail

usage() { sed -n 's/^### \{0,1\}//p' "$0"; }
die() {
  echo "renew-certificates: error: $*" >&2
  exit 1
}

# Without a terminal (cron, CI) certbot sleeps a random 1-480 s before renewing, to spread
# everyone's load on Let's Encrypt. Here each server's own cron minute spreads it instead, as
# Debian's certbot.timer does (RandomizedDelaySec, then this same flag), so a run ends in
# seconds and the reload follows the renewal at once.
certbot_args=(renew --non-interactive --no-random-sleep-on-renew)
if [[ $# -gt 1 ]]; then
  usage >&2
  exit 2
fi
case "${1:-}" in
  "") ;;
  --dry-run) certbot_args+=(--dry-run) ;;
  -h | --help)
    usage
    exit 0
    ;;
  *)
    usage >&2
    exit 2
    ;;
esac

[[ -f docker-compose.yml && -f docker-compose.prod.yml ]] ||
  die "run from the directory that holds docker-compose.yml and docker-compose.prod.yml (now: $PWD)"

read -r -a compose <<<"${COMPOSE:-docker compose}"
compose+=(--file docker-compose.yml --file docker-compose.prod.yml)

# What nginx serves, as the deploy hook installs it (docker-compose.prod.yml's certs volume).
served_certificate() {
  "${compose[@]}" exec -T nginx sha256sum /etc/nginx/certs/fullchain.pem ||
    die "cannot read nginx's certificate; fix: start nginx (docker compose up --detach nginx): certbot validates through it"
}

before="$(served_certificate)"
echo "renew-certificates: certbot ${certbot_args[*]}"
"${compose[@]}" run --rm certbot "${certbot_args[@]}"
if [[ "$(served_certificate)" == "$before" ]]; then
  echo "renew-certificates: certificate unchanged: nginx not reloaded"
else
  echo "renew-certificates: certificate renewed: reloading nginx"
  "${compose[@]}" exec -T nginx nginx -s reload ||
    die "nginx did not reload; fix: docker compose exec nginx nginx -s reload (it serves the old certificate until then)"
fi
echo "renew-certificates: done"
