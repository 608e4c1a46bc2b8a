#!/usr/bin/env bash
### Stand-in for the official image's 20-envsubst-on-templates.sh: render
### $NGINX_ENVSUBST_TEMPLATE_DIR/*.template into $NGINX_ENVSUBST_OUTPUT_DIR,
### substituting only variables that are set (and match NGINX_ENVSUBST_FILTER,
### an extended regex, when given), so nginx's own $variables survive.
### Usage: run by /docker-entrypoint.sh; takes no arguments.
set -o errexit -o nounset -o pipefail

template_dir="${NGINX_ENVSUBST_TEMPLATE_DIR:-/etc/nginx/templates}"
suffix="${NGINX_ENVSUBST_TEMPLATE_SUFFIX:-.template}"
output_dir="${NGINX_ENVSUBST_OUTPUT_DIR:-/etc/nginx/conf.d}"
[[ -d "$template_dir" ]] || exit 0

defined_envs="$(compgen -e | { grep -E -- "${NGINX_ENVSUBST_FILTER:-.}" || true; } | sed 's/.*/${&}/' | tr '\n' ' ')"
shopt -s nullglob
for template in "$template_dir"/*"$suffix"; do
  name="$(basename "$template" "$suffix")"
  echo "$0: rendering $template -> $output_dir/$name"
  envsubst "$defined_envs" <"$template" >"$output_dir/$name"
done
