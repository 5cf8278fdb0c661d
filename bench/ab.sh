#!/usr/bin/env bash
# A/B in one run: the same load against another build of the server (say,
# of the previous commit) and this checkout's, alternating, so both see the
# same machine noise. Compare the ratios of the two.
#
#   git worktree add ../base HEAD~1 && (cd ../base && cargo build --release)
#   [ENGINE=sqlite|postgres] bench/ab.sh ../base/target/release/tenantry [rounds=2] [tenants=300] [records=20] [seconds=8] [dedicated-every=2]
#
# ENGINE=postgres runs both builds on PostgreSQL ($PG_URL), each on a fresh database.
source "$(dirname "$0")/lib.sh"
OTHER=${1:?usage: bench/ab.sh <other-tenantry-binary> [rounds] [tenants] [records] [seconds] [dedicated-every]}
ROUNDS=${2:-2}
RUN=0
for round in $(seq 1 "$ROUNDS"); do
  for bin in "$OTHER" target/release/tenantry; do
    echo "## $bin (round $round)"
    # A port per run: on PostgreSQL it also names the run's fresh database.
    port=$((${PORT:-18090} + RUN)); RUN=$((RUN + 1))
    if [ "${ENGINE:-sqlite}" = postgres ]; then
      TENANTRY_BIN=$bin start_server "$port" "$PG_URL"
    else
      TENANTRY_BIN=$bin start_server "$port"
    fi
    load "${3:-300}" "${4:-20}" "${5:-8}" 32 "${6:-2}"
    stop_server
  done
done
