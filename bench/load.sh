#!/usr/bin/env bash
# Data-plane load benchmark: builds the release binary, starts it on a fresh
# data dir, seeds tenants through the API (half shared, half dedicated), then
# measures /healthz (the HTTP ceiling), GET-by-id, list and create at a fixed
# concurrency in one run, and reports the server's RSS afterwards.
#
#   bench/load.sh [tenants=1000] [records=20] [seconds=10] [connections=32] [dedicated-every=2]
set -euo pipefail
cd "$(dirname "$0")/.."
TENANTS=${1:-1000} RECORDS=${2:-20} SECS=${3:-10} CONNS=${4:-32} DEDICATED_EVERY=${5:-2}
PORT=${PORT:-18089}
cargo build --release --quiet --bin tenantry --example load
DATA=$(mktemp -d)
trap 'kill "$PID" 2>/dev/null || true; rm -rf "$DATA"' EXIT
TENANTRY_DATA_DIR="$DATA" TENANTRY_LISTEN="127.0.0.1:$PORT" \
  TENANTRY_ADMIN_EMAIL=bench@example.com TENANTRY_ADMIN_PASSWORD='Bench-Admin-Passw0rd!' \
  target/release/tenantry serve >/dev/null 2>&1 &
PID=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.1; done
target/release/examples/load "http://127.0.0.1:$PORT" bench@example.com 'Bench-Admin-Passw0rd!' \
  "$TENANTS" "$RECORDS" "$SECS" "$CONNS" "$DEDICATED_EVERY"
echo
grep -E 'VmRSS|VmHWM' "/proc/$PID/status"
