#!/usr/bin/env bash
# Data-plane load benchmark: builds the release binary, starts it on a fresh
# data dir, seeds tenants through the API (half shared, half dedicated), then
# measures /healthz (the HTTP ceiling), GET-by-id, list and create at a fixed
# concurrency in one run, and reports the server's RSS afterwards.
# ENGINE=postgres runs it on PostgreSQL ($PG_URL), ENGINE=both runs SQLite
# then PostgreSQL in the same invocation.
#
#   [ENGINE=sqlite|postgres|both] bench/load.sh [tenants=1000] [records=20] [seconds=10] [connections=32] [dedicated-every=2]
source "$(dirname "$0")/lib.sh"
ARGS=("${1:-1000}" "${2:-20}" "${3:-10}" "${4:-32}" "${5:-2}")
run() {
  echo "## $1"
  start_server "${PORT:-18089}" "${2:-}"
  load "${ARGS[@]}"
  echo
  grep -E 'VmRSS|VmHWM' "/proc/$PID/status"
  stop_server
}
case "${ENGINE:-sqlite}" in
  sqlite) run SQLite ;;
  postgres) run PostgreSQL "$PG_URL" ;;
  both) run SQLite; run PostgreSQL "$PG_URL" ;;
  *) echo "ENGINE must be sqlite, postgres or both" >&2; exit 2 ;;
esac
