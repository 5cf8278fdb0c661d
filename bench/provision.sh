#!/usr/bin/env bash
# Tenant provisioning latency, one tenant at a time, in one run: shared and
# dedicated on PostgreSQL (template clone), dedicated and shared on SQLite.
# `POST /api/v1/tenants` answers only once the tenant is usable.
#
#   bench/provision.sh [tenants=200]
source "$(dirname "$0")/lib.sh"
N=${1:-200}
echo "| tier | tenants | p50 ms | p99 ms | max ms |"
echo "| --- | ---: | ---: | ---: | ---: |"
start_server 18091 "$PG_URL"
load provision "$N" shared "shared on PostgreSQL"
load provision "$N" dedicated "dedicated on PostgreSQL"
stop_server
start_server 18092
load provision "$N" shared "shared on SQLite"
load provision "$N" dedicated "dedicated on SQLite"
