#!/usr/bin/env bash
# Make a Docker daemon answer for the sandbox tests: install Debian's docker.io (and debootstrap, which
# builds the local base image, since no registry is reachable) when missing, start dockerd when no
# daemon answers. Prints the PID of a daemon it started (empty when one was already running), so the
# caller can stop exactly what was started.
set -euo pipefail

log() { echo "[docker] $*" >&2; }

missing=()
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
if docker info >/dev/null 2>&1; then
  daemon_up=1
else
  daemon_up=0
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    log "missing ${missing[*]} and cannot install (not root or no apt-get)"
  fi
fi
[ "$daemon_up" = 1 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  log "no Docker daemon answers and not root: Docker tests will be skipped"; exit 0
fi

log "starting dockerd"
mkdir -p /var/log
setsid dockerd >/var/log/stepcode-dockerd.log 2>&1 < /dev/null &
pid=$!
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    echo "$pid"; exit 0
  fi
  sleep 0.5
done
log "dockerd did not answer within 30 s; see /var/log/stepcode-dockerd.log"
tail -n 20 /var/log/stepcode-dockerd.log >&2 || true
kill "$pid" 2>/dev/null || true
exit 1
