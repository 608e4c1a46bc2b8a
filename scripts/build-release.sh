#!/usr/bin/env bash
### Build (and push) the release of one commit: its three images, built once.
### Usage: scripts/build-release.sh <sha> [--push] [--no-build] [--tag <tag>]... [--digests <file>]
###   Builds $REGISTRY/flask-kit-web (Dockerfile), flask-kit-nginx (nginx/Dockerfile)
###   and flask-kit-backup (backup/Dockerfile) from the repository root, each
###   tagged sha-<sha> plus every --tag, with --build-arg GIT_SHA=<sha> and the
###   OCI labels source, revision and created (the commit's time, so a rebuild
###   of the same commit carries the same labels). CI and docs/deploy.md §1 run it.
###   <sha>           the full 40-hex commit the work tree is at
###   --push          push every tag, then print each image's digest as
###                   web=sha256:... nginx=sha256:... backup=sha256:..., one per
###                   line: the only lines on stdout (progress goes to stderr)
###   --no-build      push the images an earlier run built, without building
###                   again (CI builds, tests and scans first, then pushes)
###   --tag <tag>     another tag for all three images (latest, v1.2.3, ...)
###   --digests FILE  also write the digest lines to FILE (with --push)
### Environment:
###   REGISTRY        where the images go, e.g. ghcr.io/acme (required)
###   BASE_IMAGE, WHEELHOUSE  web's build args, NGINX_IMAGE nginx's,
###                   POSTGRES_IMAGE the backup's: passed only when set
###   RELEASE_PULL    1 (default): build with --pull, so the pinned bases are
###                   fetched fresh; 0 for base images that exist only locally
###   SOURCE_URL      the source label (default: origin's https URL, if any)
###   DOCKER          the docker command (default docker)
set -o errexit -o nounset -o pipefail

usage() { sed -n 's/^### \{0,1\}//p' "$0"; }
say() { echo "build-release: $*" >&2; }
# One line: what failed, then what to do about it.
die() {
  echo "build-release: error: $1; fix: $2" >&2
  exit 1
}

# image key, repository name, Dockerfile and the build args it takes beside GIT_SHA
IMAGES=(web nginx backup)
declare -A NAME=([web]=flask-kit-web [nginx]=flask-kit-nginx [backup]=flask-kit-backup)
declare -A DOCKERFILE=([web]=Dockerfile [nginx]=nginx/Dockerfile [backup]=backup/Dockerfile)
declare -A BUILD_ARGS=([web]="BASE_IMAGE WHEELHOUSE" [nginx]=NGINX_IMAGE [backup]=POSTGRES_IMAGE)

if [[ $# -eq 0 ]]; then
  usage >&2
  exit 2
fi
sha="" push=0 build=1 digests_file="" extra_tags=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help)
      usage
      exit 0
      ;;
    --push) push=1 ;;
    --no-build) build=0 ;;
    --tag | --digests)
      [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value" "give it one: $1 <value>"
      if [[ "$1" == --tag ]]; then extra_tags+=("$2"); else digests_file="$2"; fi
      shift
      ;;
    -*) die "unknown option $1" "see scripts/build-release.sh --help" ;;
    *)
      [[ -z "$sha" ]] || die "a second commit '$1'" "give one <sha>"
      sha="$1"
      ;;
  esac
  shift
done

[[ "$sha" =~ ^[0-9a-f]{40}$ ]] ||
  die "'$sha' is not a full commit SHA (40 lowercase hex digits)" "pass \"\$(git rev-parse HEAD)\""
[[ -n "${REGISTRY:-}" ]] ||
  die "REGISTRY is not set" "export REGISTRY=ghcr.io/<owner> (where the server pulls from)"
REGISTRY="${REGISTRY%/}"
for tag in "${extra_tags[@]}"; do
  # Docker's tag grammar; sha-* belongs to the commit tag alone
  [[ "$tag" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ && "$tag" != sha-* ]] ||
    die "'$tag' is not a tag this script may set" "use letters, digits, '_', '.', '-', not starting with sha-"
done
[[ $build -eq 1 || $push -eq 1 ]] || die "--no-build without --push does nothing" "add --push"
[[ -z "$digests_file" || $push -eq 1 ]] || die "--digests without --push: nothing is pushed" "add --push"
read -r -a docker <<<"${DOCKER:-docker}"

cd "$(dirname "$0")/.."
# The labels name this commit, so the work tree must be it (a checkout without .git, as
# under some CI runners, cannot be checked and is taken as given).
if head="$(git rev-parse --verify --quiet HEAD 2>/dev/null)" && [[ "$head" != "$sha" ]]; then
  die "the work tree is at $head, not $sha" "git checkout $sha, or pass \"\$(git rev-parse HEAD)\""
fi

refs_of() {
  local key="$1" tag
  REFS=("$REGISTRY/${NAME[$key]}:sha-$sha")
  for tag in "${extra_tags[@]}"; do REFS+=("$REGISTRY/${NAME[$key]}:$tag"); done
}

if [[ $build -eq 1 ]]; then
  if [[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
    say "warning: the work tree has uncommitted changes: the images include them, the labels say $sha"
  fi
  created="$(git show -s --format=%cI "$sha" 2>/dev/null)" || created="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  source_url="${SOURCE_URL:-}"
  if [[ -z "$source_url" ]] && origin="$(git remote get-url origin 2>/dev/null)" && [[ "$origin" == https://* ]]; then
    rest="${origin#https://}"
    # never a token from the URL (https://x-access-token:...@host/...) into a public label
    host="${rest%%/*}"
    [[ "$host" != *@* ]] || rest="${rest#*@}"
    source_url="https://${rest%.git}"
  fi
  labels=(--label "org.opencontainers.image.revision=$sha" --label "org.opencontainers.image.created=$created")
  [[ -z "$source_url" ]] || labels+=(--label "org.opencontainers.image.source=$source_url")
  pull=(--pull)
  [[ "${RELEASE_PULL:-1}" != 0 ]] || pull=()

  for key in "${IMAGES[@]}"; do
    args=(--build-arg "GIT_SHA=$sha")
    for name in ${BUILD_ARGS[$key]}; do
      [[ -z "${!name:-}" ]] || args+=(--build-arg "$name=${!name}")
    done
    refs_of "$key"
    tags=()
    for ref in "${REFS[@]}"; do tags+=(--tag "$ref"); done
    say "building ${REFS[0]}"
    "${docker[@]}" build "${pull[@]}" --file "${DOCKERFILE[$key]}" "${args[@]}" "${labels[@]}" "${tags[@]}" . >&2 ||
      die "building ${NAME[$key]} from ${DOCKERFILE[$key]} failed (output above)" "fix the build, or set RELEASE_PULL=0 for local-only base images"
  done
fi

[[ $push -eq 1 ]] || exit 0

# Every tag must exist before the first push, so a release is never pushed in part.
for key in "${IMAGES[@]}"; do
  refs_of "$key"
  for ref in "${REFS[@]}"; do
    "${docker[@]}" image inspect "$ref" >/dev/null 2>&1 ||
      die "$ref does not exist here" "build it first, with the same --tag options: scripts/build-release.sh $sha"
  done
done
for key in "${IMAGES[@]}"; do
  refs_of "$key"
  for ref in "${REFS[@]}"; do
    say "pushing $ref"
    "${docker[@]}" push "$ref" >&2 ||
      die "pushing $ref failed (output above)" "docker login ${REGISTRY%%/*}, or check that the registry is up"
  done
done

# The digest the registry now serves for each image: what the server pins.
lines=()
for key in "${IMAGES[@]}"; do
  refs_of "$key"
  repo="$REGISTRY/${NAME[$key]}"
  found="$("${docker[@]}" image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "${REFS[0]}" |
    sed -n "s|^${repo//./\\.}@\(sha256:[0-9a-f]\{64\}\)\$|\1|p" | sort -u)"
  [[ -n "$found" ]] || die "no digest of ${REFS[0]} in $repo after the push" "check the push output above"
  [[ "$found" != *$'\n'* ]] ||
    die "${REFS[0]} has several digests in $repo: $(echo "$found" | tr '\n' ' ')" "docker image rm the stale tags, then push again"
  lines+=("$key=$found")
done
printf '%s\n' "${lines[@]}"
if [[ -n "$digests_file" ]]; then
  printf '%s\n' "${lines[@]}" >"$digests_file" || die "cannot write $digests_file" "pick a writable path"
fi
