#!/usr/bin/env bash
# Noisy neighbour: two tenants on a 50 req/s plan. Measures the quiet tenant's
# GET-by-id latency alone, then while the other floods from 28 connections
# (well over 10x its limit), in one run; prints both and the p99 ratio.
#
#   bench/noisy.sh [seconds=10]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
PORT=${PORT:-18088}
cargo build --release --quiet --bin tenantry --example load
DATA=$(mktemp -d)
trap 'kill "$PID" 2>/dev/null || true; rm -rf "$DATA"' EXIT
TENANTRY_DATA_DIR="$DATA" TENANTRY_LISTEN="127.0.0.1:$PORT" \
  TENANTRY_ADMIN_EMAIL=bench@example.com TENANTRY_ADMIN_PASSWORD='Bench-Admin-Passw0rd!' \
  target/release/tenantry serve >/dev/null 2>&1 &
PID=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.1; done
target/release/examples/load "http://127.0.0.1:$PORT" bench@example.com 'Bench-Admin-Passw0rd!' noisy "$SECS"
