#!/usr/bin/env bash
# The README's test command: install everything the tests need (system packages included), start
# the services they use, run pytest, stop what was started. Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
# The reference benchmark data (CRUXEval, REval) beside the checkout, unless set already.
export STEPCODE_SHARED_DATA="${STEPCODE_SHARED_DATA:-$(cd .. && pwd)/shared/data}"

scripts/bootstrap.sh dev,train,reval || exit 1

scripts/ensure_browser.sh || { echo "browser set-up failed" >&2; exit 1; }
dockerd_pid="$(scripts/ensure_docker.sh)" || { echo "Docker set-up failed" >&2; exit 1; }
stop_dockerd() {
  if [ -n "$dockerd_pid" ]; then
    kill "$dockerd_pid" 2>/dev/null
    for _ in $(seq 1 40); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.25; done
  fi
}
trap stop_dockerd EXIT

.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" = 5 ]; then
  echo "pytest collected no tests: treating that as a failure" >&2
  exit 1
fi
exit "$rc"
