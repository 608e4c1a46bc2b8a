#!/bin/sh
### Write nginx's upstream list (the Gunicorn replicas) at start.
###
### Usage: 30-upstream.sh [-h|--help]
###   Run by the nginx image's /docker-entrypoint.sh before nginx starts (no
###   arguments). Writes one `server` line per target in $NGINX_UPSTREAM to
###   $NGINX_UPSTREAM_DIR/web.conf, which the site's `upstream app` includes.
###   With NGINX_UPSTREAM_RESOLVER set, each name is re-resolved every second
###   while nginx runs (`server ... resolve`, nginx 1.27.3+): a replica that
###   joins, leaves or restarts under a new address is seen without a reload.
###   Without it, names are resolved once, when nginx (re)loads.
###
### Environment:
###   NGINX_UPSTREAM           space-separated host:port targets (default: web:8000)
###   NGINX_UPSTREAM_RESOLVER  DNS server for re-resolving them, e.g. Docker's
###                            127.0.0.11 (default: none, resolve once)
###   NGINX_UPSTREAM_DIR       where the file goes (default: /etc/nginx/upstream.d)
# POSIX sh: the official images run these hooks with /bin/sh.
set -eu

case "${1:-}" in
  "") ;;
  -h | --help)
    sed -n 's/^### \{0,1\}//p' "$0"
    exit 0
    ;;
  *)
    sed -n 's/^### \{0,1\}//p' "$0" >&2
    exit 2
    ;;
esac

name="$(basename "$0")"
dir="${NGINX_UPSTREAM_DIR:-/etc/nginx/upstream.d}"
file="$dir/web.conf"
resolver="${NGINX_UPSTREAM_RESOLVER:-}"
mkdir -p "$dir"
: >"$file.tmp"
suffix=""
if [ -n "$resolver" ]; then
  # `nginx -v` prints "nginx version: nginx/1.28.0" on stderr
  version="$(nginx -v 2>&1 | sed -n 's|.*nginx/\([0-9][0-9.]*\).*|\1|p')"
  if ! printf '1.27.3\n%s\n' "$version" | sort -C -V; then
    echo "$name: error: nginx ${version:-?} cannot re-resolve upstream servers (needs 1.27.3+); fix: run the pinned nginx image, or unset NGINX_UPSTREAM_RESOLVER" >&2
    rm -f "$file.tmp"
    exit 1
  fi
  # Docker's DNS answers with every replica that holds the name. valid=1s: a replica that
  # joins, leaves or comes back under a new address is seen within a second or so,
  # whatever TTL the DNS gives. ipv6=off: Docker networks here are IPv4. A slow DNS
  # keeps the last answer rather than stalling nginx (resolver_timeout, default 30 s).
  # https://nginx.org/en/docs/http/ngx_http_upstream_module.html#resolver
  {
    echo "resolver $resolver valid=1s ipv6=off;"
    echo "resolver_timeout 2s;"
  } >>"$file.tmp"
  suffix=" resolve"
fi
# A replica that refused or timed out a connection is skipped for fail_timeout, then tried
# with one request. 2s, not the default 10s: a replica restarting after a crash refuses until
# its Gunicorn listens, and should take traffic again within a couple of seconds of that, not
# ten; the cost is one refused connect (a millisecond) per 2 s while it is down.
# https://nginx.org/en/docs/http/ngx_http_upstream_module.html#fail_timeout
for target in ${NGINX_UPSTREAM:-web:8000}; do
  echo "server $target$suffix max_fails=1 fail_timeout=2s;" >>"$file.tmp"
done
mv -f "$file.tmp" "$file"
echo "$name: upstream ${NGINX_UPSTREAM:-web:8000}${resolver:+ (re-resolved through $resolver)} in $file"
