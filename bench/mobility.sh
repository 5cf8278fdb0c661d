#!/usr/bin/env bash
# Tenant mobility at scale, in one run: a tenant of `records` records is
# exported (records/s, server RSS growth), its file imported into a new
# tenant, and the tenant moved to the other tier and back while four
# writers write to it (their p99 and worst latency: the freeze as writers
# see it; the server logs each move's own `freeze_ms`).
#
#   [ENGINE=postgres|sqlite|both] bench/mobility.sh [records=100000]
source "$(dirname "$0")/lib.sh"
N=${1:-100000}
echo "| engine, tier | records | export rec/s | export RSS +MB | file MB | import rec/s | import RSS +MB | moves s (away / back) | writes during moves | write p99 ms | write max ms | write errors |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
freezes() {
  grep -h '"tenant moved"' "${DIRS[-1]}/server.log" | sed -E 's/.*"freeze_ms":([0-9]+).*/\1/' | paste -sd, -
}
if [ "${ENGINE:-both}" != sqlite ]; then
  start_server 18093 "$PG_URL"
  load mobility "$N" shared "PostgreSQL, shared" "$PID"
  load mobility "$N" dedicated "PostgreSQL, dedicated" "$PID"
  echo "PostgreSQL freeze_ms per move: $(freezes)"
  stop_server
fi
if [ "${ENGINE:-both}" != postgres ]; then
  start_server 18094
  load mobility "$N" shared "SQLite, shared" "$PID"
  load mobility "$N" dedicated "SQLite, dedicated" "$PID"
  echo "SQLite freeze_ms per move: $(freezes)"
fi
