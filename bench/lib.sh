# Shared by the bench scripts: build once, start `tenantry serve` on a fresh
# data dir (SQLite, or PostgreSQL when a URL is given), wait until ready, and
# clean up on exit (server, data dirs, PostgreSQL databases).
#
#   source bench/lib.sh
#   start_server <port> [postgres-base-url]   # sets BASE; PostgreSQL gets a fresh database
#                                             # (TENANTRY_BIN: another binary to start)
#   stop_server
#   wait_ready <url> <log>                    # waits for a server's URL, or prints its log and exits
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ADMIN_EMAIL=bench@example.com
ADMIN_PASSWORD='Bench-Admin-Passw0rd!'
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
PID=""
DIRS=()
DATABASES=()

cargo build --release --quiet --bin tenantry --example load

cleanup() {
  local status=$?
  stop_server
  # A failed run shows why the server refused (its log goes with the dir).
  if [ "$status" -ne 0 ]; then
    for d in "${DIRS[@]}"; do
      [ -f "$d/server.log" ] && grep -E '"level":"(WARN|ERROR)"' "$d/server.log" | tail -20 >&2
    done
  fi
  for d in "${DIRS[@]}"; do rm -rf "$d"; done
  for entry in "${DATABASES[@]}"; do drop_databases $entry; done
}
trap cleanup EXIT

# Drops a bench database with its template and every dedicated tenant database.
drop_databases() {
  psql "$1/postgres" -qAt -c "SELECT datname FROM pg_database WHERE datname LIKE '$(basename "$2")%'" 2>/dev/null |
    while read -r name; do psql "$1/postgres" -q -c "DROP DATABASE IF EXISTS $name WITH (FORCE)"; done
}

start_server() {
  local port=$1 pg=${2:-}
  local data
  data=$(mktemp -d)
  DIRS+=("$data")
  local env=(TENANTRY_DATA_DIR="$data" TENANTRY_LISTEN="127.0.0.1:$port"
    TENANTRY_ADMIN_EMAIL="$ADMIN_EMAIL" TENANTRY_ADMIN_PASSWORD="$ADMIN_PASSWORD")
  if [ -n "$pg" ]; then
    local db="tenantry_bench_$$_$port"
    DATABASES+=("$pg $db")
    env+=(TENANTRY_DATABASE_URL="$pg/$db" TENANTRY_DATABASE_MAX_CONNECTIONS="${PG_CONNECTIONS:-16}")
  fi
  env "${env[@]}" "${TENANTRY_BIN:-target/release/tenantry}" serve >"$data/server.log" 2>&1 &
  PID=$!
  BASE="http://127.0.0.1:$port"
  wait_ready "$BASE/readyz" "$data/server.log"
}

# Waits up to 30 s for <url> to answer 2xx; if it never does, prints <log>
# and exits. (For any server: bench/compare.sh starts other apps with it.)
wait_ready() {
  local url=$1 log=$2
  for _ in $(seq 1 300); do curl -sf "$url" >/dev/null && return 0; sleep 0.1; done
  echo "server did not start:" >&2
  cat "$log" >&2
  exit 1
}

stop_server() {
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; PID=""; fi
}

load() {
  target/release/examples/load "$BASE" "$ADMIN_EMAIL" "$ADMIN_PASSWORD" "$@"
}
