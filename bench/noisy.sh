#!/usr/bin/env bash
# Noisy neighbour: two tenants on a 50 req/s plan. Measures the quiet tenant's
# GET-by-id latency alone, then while the other sends at 10x its limit
# (500 req/s from 28 connections: the issue's target, p99 ratio <= 1.5), then
# while it sends flat out from the same connections (a stress figure: on a
# 2-core machine the load generator itself competes for the cores), in one
# run; prints the three and the p99 ratios.
#
#   bench/noisy.sh [seconds=10]
source "$(dirname "$0")/lib.sh"
start_server "${PORT:-18088}"
load noisy "${1:-10}"
