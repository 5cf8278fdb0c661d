#!/usr/bin/env bash
# A/B in one run: the same load against another build of the server (say,
# of the previous commit) and this checkout's, alternating, so both see the
# same machine noise. Compare the ratios of the two.
#
#   git worktree add ../base HEAD~1 && (cd ../base && cargo build --release)
#   bench/ab.sh ../base/target/release/tenantry [rounds=2] [tenants=300] [records=20] [seconds=8] [dedicated-every=2]
source "$(dirname "$0")/lib.sh"
OTHER=${1:?usage: bench/ab.sh <other-tenantry-binary> [rounds] [tenants] [records] [seconds] [dedicated-every]}
ROUNDS=${2:-2}
for round in $(seq 1 "$ROUNDS"); do
  for bin in "$OTHER" target/release/tenantry; do
    echo "## $bin (round $round)"
    TENANTRY_BIN=$bin start_server "${PORT:-18090}"
    load "${3:-300}" "${4:-20}" "${5:-8}" 32 "${6:-2}"
    stop_server
  done
done
