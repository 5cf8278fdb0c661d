#!/usr/bin/env bash
# The dedicated tier's connection budget on PostgreSQL: seeds `tenants`
# dedicated tenants (one database each), then measures GET-by-id and create
# with requests spread uniformly and by Zipf (the k-th tenant with a chance
# proportional to 1/k), side by side in one run, and reports the errors and
# the peak number of the server's connections to tenant databases against
# the cap (`TENANTRY_DEDICATED_MAX_CONNECTIONS`).
#
#   bench/budget.sh [tenants=2000] [records=5] [seconds=10] [connections=32] [cap=64]
source "$(dirname "$0")/lib.sh"
TENANTS=${1:-2000} RECORDS=${2:-5} SECS=${3:-10} CONNS=${4:-32} CAP=${5:-64}
PORT=${PORT:-18091}
export TENANTRY_DEDICATED_MAX_CONNECTIONS=$CAP
start_server "$PORT" "$PG_URL"
peak=$(mktemp)
DIRS+=("$peak")
echo 0 >"$peak"
# Samples the runtime role's connections to this run's tenant databases
# every 200 ms while the server runs.
(
  max=0
  while kill -0 "$PID" 2>/dev/null; do
    n=$(psql "$PG_URL/postgres" -qAt -c "SELECT count(*) FROM pg_stat_activity
        WHERE usename = 'tenantry_app' AND datname LIKE 'tenantry\_bench\_$$\_${PORT}\_%'" 2>/dev/null || echo 0)
    if [ "$n" -gt "$max" ]; then max=$n; echo "$max" >"$peak"; fi
    sleep 0.2
  done
) &
SAMPLER=$!
ACCESS=both LOAD_ONLY=${LOAD_ONLY:-healthz,get-by-id,create} load "$TENANTS" "$RECORDS" "$SECS" "$CONNS" 1
echo
echo "peak connections to tenant databases: $(cat "$peak") (cap $CAP)"
grep -E 'VmRSS|VmHWM' "/proc/$PID/status"
stop_server
wait "$SAMPLER" 2>/dev/null || true
