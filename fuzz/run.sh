#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 60 s each) on its
# committed corpus; a crash fails the run and leaves the input in
# fuzz/artifacts/<target>/. Installs cargo-fuzz if it is missing.
#   fuzz/run.sh [seconds=60]
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH=${1:-60}
# Outside the checkout, so a fresh clone on the same machine (CI) reuses
# the instrumented build instead of spending a quarter of an hour on it.
TARGET_DIR=${FUZZ_TARGET_DIR:-$HOME/.cache/tenantry/fuzz-target}
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
for target in filter_sort merge_patch slug tenant_headers; do
  mkdir -p "corpus/$target"
  cargo +nightly fuzz run --target-dir "$TARGET_DIR" "$target" "corpus/$target" -- \
    -max_total_time="$SECONDS_EACH" -max_len=4096 -print_final_stats=1
done
