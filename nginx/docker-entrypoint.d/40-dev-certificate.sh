#!/bin/sh
### Create a self-signed development certificate when none is installed.
###
### Usage: 40-dev-certificate.sh [-h|--help]
###   Run by the nginx image's /docker-entrypoint.sh before nginx starts (no
###   arguments). If $NGINX_CERT_DIR/fullchain.pem is missing, writes
###   fullchain.pem + privkey.pem there: ECDSA P-256, valid 365 days,
###   subjectAltName = $NGINX_SERVER_NAME, localhost and 127.0.0.1.
###   An existing fullchain.pem (yours, or certbot's) is never touched.
###
### Environment:
###   NGINX_SERVER_NAME  name in the certificate (default: localhost)
###   NGINX_CERT_DIR     output directory (default: /etc/nginx/certs)
###
### Development only: browsers warn about self-signed certificates.
### Production certificates: see docs/certificates.md.
# POSIX sh, not bash: the official nginx images (Debian and Alpine) run these
# hooks with /bin/sh. dash has no pipefail, so this script uses no pipes.
set -eu

me="$(basename "$0")"

usage() {
  sed -n 's/^### \{0,1\}//p' "$0"
}

die() {
  echo "$me: error: $*" >&2
  exit 1
}

case "${1:-}" in
  "") ;;
  -h | --help)
    usage
    exit 0
    ;;
  *)
    usage >&2
    exit 2
    ;;
esac

server_name="${NGINX_SERVER_NAME:-localhost}"
cert_dir="${NGINX_CERT_DIR:-/etc/nginx/certs}"

if [ -e "$cert_dir/fullchain.pem" ]; then
  echo "$me: using the existing certificate in $cert_dir"
  exit 0
fi

command -v openssl >/dev/null 2>&1 || die "openssl is not installed; mount a certificate into $cert_dir instead"

# A host name goes in as DNS:, an IPv4 address as IP: (a name-only SAN would
# not match https://<address>/ in clients that check it).
case "$server_name" in
  *[!0-9.]*) san="DNS:$server_name" ;;
  *) san="IP:$server_name" ;;
esac
[ "$server_name" = "localhost" ] || san="$san,DNS:localhost"
[ "$server_name" = "127.0.0.1" ] || san="$san,IP:127.0.0.1"

mkdir -p "$cert_dir"
# Write to temporary names, then rename: nginx never sees half a key pair,
# even if this is interrupted. umask keeps the private key owner-only.
# CA:FALSE + serverAuth: a leaf certificate, so a developer who trusts it in a
# browser has not trusted a CA that could sign certificates for other sites.
umask 077
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -days 365 -subj "/CN=$server_name" \
  -addext "basicConstraints=critical,CA:FALSE" \
  -addext "subjectAltName=$san" \
  -addext "keyUsage=critical,digitalSignature" \
  -addext "extendedKeyUsage=serverAuth" \
  -keyout "$cert_dir/privkey.pem.tmp" -out "$cert_dir/fullchain.pem.tmp" 2>/dev/null ||
  die "openssl could not create a certificate in $cert_dir"
chmod 644 "$cert_dir/fullchain.pem.tmp"
mv -f "$cert_dir/privkey.pem.tmp" "$cert_dir/privkey.pem"
mv -f "$cert_dir/fullchain.pem.tmp" "$cert_dir/fullchain.pem"

echo "$me: created a self-signed certificate for $san in $cert_dir (development only)"
