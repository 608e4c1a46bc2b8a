#!/bin/sh
### Write nginx's upstream list at start, unless a deploy has written one.
###
### Usage: 30-upstream.sh [-h|--help]
###   Run by the nginx image's /docker-entrypoint.sh before nginx starts (no
###   arguments). Writes one `server` line per target in $NGINX_UPSTREAM to
###   $NGINX_UPSTREAM_DIR/web.conf, unless that file exists. A Compose service
###   name (web:8000) resolves to all of its replicas. scripts/deploy.sh
###   rewrites the file at each release switch, then reloads nginx.
###
### Environment:
###   NGINX_UPSTREAM      space-separated host:port targets (default: web:8000)
###   NGINX_UPSTREAM_DIR  where the file goes (default: /etc/nginx/upstream.d)
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

dir="${NGINX_UPSTREAM_DIR:-/etc/nginx/upstream.d}"
file="$dir/web.conf"
if [ -e "$file" ]; then
  echo "$(basename "$0"): keeping $file"
  exit 0
fi
mkdir -p "$dir"
: >"$file.tmp"
for target in ${NGINX_UPSTREAM:-web:8000}; do
  echo "server $target;" >>"$file.tmp"
done
mv -f "$file.tmp" "$file"
echo "$(basename "$0"): upstream ${NGINX_UPSTREAM:-web:8000} in $file"
