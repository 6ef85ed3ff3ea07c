#!/usr/bin/env bash
# Build the sandbox Docker image (tag stepcode-sandbox:<hash of sandbox/Dockerfile + worker.py>) when
# it is missing. No registry is reachable here, so unless SANDBOX_BASE_IMAGE names an image that
# exists locally, the base is a Debian bookworm rootfs with python3 made by debootstrap and imported
# with `docker import` (cached as $SANDBOX_LOCAL_BASE, default stepcode-sandbox-base:bookworm).
# Prints the image tag.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { echo "[sandbox-image] $*" >&2; }

tag="${SANDBOX_IMAGE:-stepcode-sandbox:$(cat sandbox/Dockerfile sandbox/worker.py | sha256sum | cut -c1-12)}"
if docker image inspect "$tag" >/dev/null 2>&1; then echo "$tag"; exit 0; fi

base="${SANDBOX_BASE_IMAGE:-}"
if [ -z "$base" ] || ! docker image inspect "$base" >/dev/null 2>&1; then
  base="${SANDBOX_LOCAL_BASE:-stepcode-sandbox-base:bookworm}"
  if ! docker image inspect "$base" >/dev/null 2>&1; then
    debootstrap="$(command -v debootstrap || echo /usr/sbin/debootstrap)"
    [ -x "$debootstrap" ] || { log "debootstrap missing (scripts/ensure_docker.sh installs it)"; exit 1; }
    root="$(mktemp -d /tmp/stepcode-rootfs.XXXXXX)"
    trap 'rm -rf "$root"' EXIT
    log "debootstrap bookworm with python3 into $root"
    mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
    "$debootstrap" --variant=minbase --include=python3 bookworm "$root" "$mirror" >"$root.log" 2>&1 \
      || { tail -n 20 "$root.log" >&2; exit 1; }
    rm -f "$root.log"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -c . | docker import - "$base" >/dev/null
    log "imported $base"
  fi
fi
log "building $tag from $base"
DOCKER_BUILDKIT=0 docker build -q --build-arg BASE_IMAGE="$base" -t "$tag" -f sandbox/Dockerfile sandbox >/dev/null
# Older builds (other Dockerfile/worker hashes) are dead weight: drop their tags.
if [ -z "${SANDBOX_IMAGE:-}" ]; then
  docker images --format '{{.Repository}}:{{.Tag}}' stepcode-sandbox | grep -vx "$tag" | xargs -r docker rmi >/dev/null 2>&1 || true
fi
echo "$tag"
