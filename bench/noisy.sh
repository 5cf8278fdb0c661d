#!/usr/bin/env bash
# Noisy neighbour: two tenants on a 50 req/s plan. Measures the quiet tenant's
# GET-by-id latency alone, then while the other floods from 28 connections
# (well over 10x its limit), in one run; prints both and the p99 ratio.
#
#   bench/noisy.sh [seconds=10]
source "$(dirname "$0")/lib.sh"
start_server "${PORT:-18088}"
load noisy "${1:-10}"
