#!/bin/sh
### Write which peers nginx trusts for X-Forwarded-For and X-Forwarded-Proto.
###
### Usage: 35-trusted-proxies.sh [-h|--help]
###   Run by the nginx image's /docker-entrypoint.sh before nginx starts (no
###   arguments). Writes $NGINX_CONF_D/trusted-proxies.conf from
###   $NGINX_TRUSTED_PROXIES: realip settings (the client's address, from the
###   balancer's X-Forwarded-For, replaces the balancer's) and the
###   $from_trusted_proxy variable the site template reads. Empty: nobody is
###   trusted, and nginx is the edge. Each entry must be an address or CIDR
###   range; anything else stops the container with an error.
###
### Environment:
###   NGINX_TRUSTED_PROXIES  space-separated ranges of the TLS-terminating
###                          balancers in front (e.g. 10.0.0.0/16); default none
###   NGINX_CONF_D           where the file goes (default: /etc/nginx/conf.d)
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

name=$(basename "$0")
file="${NGINX_CONF_D:-/etc/nginx/conf.d}/trusted-proxies.conf"
ranges="${NGINX_TRUSTED_PROXIES:-}"

for range in $ranges; do
  # an IPv4 or IPv6 address, optionally with a prefix length: nginx checks the rest
  if ! printf '%s\n' "$range" | grep -Eq '^([0-9]{1,3}(\.[0-9]{1,3}){3}|[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*)(/[0-9]{1,3})?$'; then
    echo "$name: error: NGINX_TRUSTED_PROXIES has '$range', not an address or CIDR range; fix: e.g. NGINX_TRUSTED_PROXIES=10.0.0.0/16" >&2
    exit 1
  fi
done

{
  echo "# Written by $name at start from NGINX_TRUSTED_PROXIES='$ranges'."
  for range in $ranges; do
    echo "set_real_ip_from $range;"
  done
  if [ -n "$ranges" ]; then
    # the balancer appends the client to X-Forwarded-For; recursive: skip any
    # trusted hops at its end, and take the last address before them
    echo "real_ip_header X-Forwarded-For;"
    echo "real_ip_recursive on;"
  fi
  # $realip_remote_addr is the TCP peer even after realip replaced $remote_addr
  # shellcheck disable=SC2016 # nginx's variables, not the shell's
  echo 'geo $realip_remote_addr $from_trusted_proxy {'
  echo "    default 0;"
  for range in $ranges; do
    echo "    $range 1;"
  done
  echo "}"
} >"$file.tmp"
mv -f "$file.tmp" "$file"
echo "$name: trusted proxies: ${ranges:-none}"
