#!/usr/bin/env bash
# A PostgreSQL server for the instance tests (deploy/dagster.yaml's storage): install Debian's
# postgresql when missing, start its cluster when down, and create a test role that may create
# databases (each test makes its own and drops it). Prints two lines: the connection URL
# (postgresql://role:password@127.0.0.1:port/postgres) and the cluster it started ("15 main"; empty
# when the cluster was already up), so the caller can stop exactly what was started.
# A URL already in $STEPCODE_TEST_POSTGRES_URL is checked and used as it is.
# Not root and no server to set up: prints nothing and exits 0 (the tests skip, and fail under CI);
# any other failure exits non-zero.
set -euo pipefail

log() { echo "[postgres] $*" >&2; }
ROLE=stepcode_test

answers() {  # answers URL: a query through the URL succeeds
  psql "$1" -XtAc 'select 1' >/dev/null 2>&1
}

if [ -n "${STEPCODE_TEST_POSTGRES_URL:-}" ]; then
  answers "$STEPCODE_TEST_POSTGRES_URL" || { log "STEPCODE_TEST_POSTGRES_URL does not answer"; exit 1; }
  printf '%s\n\n' "$STEPCODE_TEST_POSTGRES_URL"
  exit 0
fi

newest_version() { ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n 1; }

installed=0
if [ -z "$(newest_version)" ] || ! command -v pg_ctlcluster >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    log "postgresql is not installed and cannot be (not root or no apt-get): the PostgreSQL tests will be skipped"
    exit 0
  fi
  log "installing postgresql"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  installed=1
fi
if [ "$(id -u)" != 0 ]; then
  log "not root, so cannot start the cluster or create the test role: the PostgreSQL tests will be skipped"
  log "(or set STEPCODE_TEST_POSTGRES_URL to a role that may create databases)"
  exit 0
fi

version="$(newest_version)"
cluster=main
if ! pg_lsclusters -h | awk -v v="$version" -v c="$cluster" '$1 == v && $2 == c {found = 1} END {exit !found}'; then
  log "creating cluster $version/$cluster"
  pg_createcluster "$version" "$cluster" >/dev/null
fi
status() { pg_lsclusters -h | awk -v v="$version" -v c="$cluster" '$1 == v && $2 == c {print $4}'; }
port="$(pg_lsclusters -h | awk -v v="$version" -v c="$cluster" '$1 == v && $2 == c {print $3}')"

started=""
# A failure after the start stops what was started (on success the caller stops it).
stop_on_failure() {
  local rc=$?
  if [ "$rc" != 0 ] && [ -n "$started" ]; then (cd / && pg_ctlcluster $started stop) || true; fi
}
trap stop_on_failure EXIT
if [ "$(status)" != online ]; then
  log "starting cluster $version/$cluster on port $port"
  (cd / && pg_ctlcluster "$version" "$cluster" start) || {
    log "could not start the cluster; its log:"
    tail -n 20 "/var/log/postgresql/postgresql-$version-$cluster.log" >&2 || true
    exit 1
  }
  started="$version $cluster"
elif [ "$installed" = 1 ]; then
  started="$version $cluster"  # the package's installation started it: ours to stop
fi
for _ in $(seq 1 60); do
  pg_isready -q -h 127.0.0.1 -p "$port" && break
  sleep 0.5
done
pg_isready -q -h 127.0.0.1 -p "$port" || { log "the cluster does not accept connections on port $port"; exit 1; }

# A fresh password each time: the role exists only for the tests.
password="$(tr -dc 'a-z0-9' </dev/urandom | head -c 24 || true)"
(cd / && runuser -u postgres -- psql -X -q -p "$port" -v ON_ERROR_STOP=1 -v role="$ROLE" -v password="$password") <<'SQL' >/dev/null
SELECT format('CREATE ROLE %I', :'role') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('ALTER ROLE %I LOGIN CREATEDB PASSWORD %L', :'role', :'password') \gexec
-- DROP DATABASE ... WITH (FORCE) also ends an autovacuum worker on the database, which belongs to no role
SELECT format('GRANT pg_signal_backend TO %I', :'role') \gexec
SQL

url="postgresql://$ROLE:$password@127.0.0.1:$port/postgres"
answers "$url" || { log "the test role cannot connect over TCP to 127.0.0.1:$port (check pg_hba.conf)"; exit 1; }
printf '%s\n%s\n' "$url" "$started"
