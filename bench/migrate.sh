#!/usr/bin/env bash
# `tenantry migrate` over many dedicated tenants, in one run: SQLite and
# PostgreSQL. Tenants are created through the API, the server is stopped,
# every dedicated tenant is marked behind in the control store (as after an
# upgrade that brings a new tenant migration), and `tenantry migrate` is
# timed. With no new migration in the binary, each tenant costs what an
# upgrade costs minus the DDL itself: open its database, read its applied
# migrations, (PostgreSQL) re-grant, record its version.
#
#   bench/migrate.sh [sqlite-tenants=1000] [postgres-tenants=200] [parallel=8]
source "$(dirname "$0")/lib.sh"
SQLITE_N=${1:-1000} PG_N=${2:-200} PARALLEL=${3:-8}

time_migrate() {
  local label=$1 n=$2
  shift 2
  local start end
  start=$(date +%s.%N)
  env "$@" target/release/tenantry migrate --parallel "$PARALLEL" >/dev/null
  end=$(date +%s.%N)
  python3 -c "d=$end-$start; print(f'| $label | $n | {d:.2f} | {$n/d:.0f} |')"
}

start_server 18093
DATA_SQLITE=${DIRS[-1]}
load provision "$SQLITE_N" dedicated "create (SQLite)" >/dev/null
stop_server
sqlite3 "$DATA_SQLITE/control.db" "UPDATE tenants SET schema_version = 0 WHERE isolation = 'dedicated'"

start_server 18094 "$PG_URL"
DATA_PG=${DIRS[-1]}
read -r _ PG_DB <<<"${DATABASES[-1]}"
load provision "$PG_N" dedicated "create (PostgreSQL)" >/dev/null
stop_server
psql "$PG_URL/$PG_DB" -q -c "UPDATE tenants SET schema_version = 0 WHERE isolation = 'dedicated'"

echo "| engine | dedicated tenants | wall s | tenants/s |"
echo "| --- | ---: | ---: | ---: |"
time_migrate SQLite "$SQLITE_N" TENANTRY_DATA_DIR="$DATA_SQLITE"
time_migrate PostgreSQL "$PG_N" TENANTRY_DATA_DIR="$DATA_PG" TENANTRY_DATABASE_URL="$PG_URL/$PG_DB"
