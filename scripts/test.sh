#!/usr/bin/env bash
# The README's test command: install everything the tests need (system packages included), start
# the services they use, run pytest, stop what was started. Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh dev,train,reval,ray,mlflow,docs || exit 1

# The reference benchmark data (CRUXEval, REval) into the cache: the development copy beside the
# checkout when it exists (CI's case), else whatever `stepcode data fetch` stored before. Tests that
# need it skip without it, and fail under CI=true.
if [ -d ../shared/data ]; then
  .venv/bin/stepcode data fetch --from ../shared/data || { echo "importing ../shared/data failed" >&2; exit 1; }
else
  .venv/bin/stepcode data status >/dev/null 2>&1 || echo "no reference data (run \`stepcode data fetch\`): its tests skip" >&2
fi

scripts/ensure_browser.sh || { echo "browser set-up failed" >&2; exit 1; }
dockerd_pid="$(scripts/ensure_docker.sh)" || { echo "Docker set-up failed" >&2; exit 1; }
stop_dockerd() {
  if [ -n "$dockerd_pid" ]; then
    kill "$dockerd_pid" 2>/dev/null
    for _ in $(seq 1 40); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.25; done
  fi
}
postgres_cluster=""
stop_services() {
  stop_dockerd
  # Word splitting is wanted: "15 main" is pg_ctlcluster's two arguments.
  # shellcheck disable=SC2086
  if [ -n "$postgres_cluster" ]; then (cd / && pg_ctlcluster $postgres_cluster stop) || true; fi
}
trap stop_services EXIT

# PostgreSQL for the instance tests against deploy/dagster.yaml (line 1: URL, line 2: what it started).
postgres="$(scripts/ensure_postgres.sh)" || { echo "PostgreSQL set-up failed" >&2; exit 1; }
postgres_cluster="$(sed -n 2p <<<"$postgres")"
url="$(sed -n 1p <<<"$postgres")"
[ -n "$url" ] && export STEPCODE_TEST_POSTGRES_URL="$url"

.venv/bin/python -m pytest --durations=30 "$@"  # the 30 slowest tests, to keep CI time in view
rc=$?
if [ "$rc" = 5 ]; then
  echo "pytest collected no tests: treating that as a failure" >&2
  exit 1
fi
exit "$rc"
