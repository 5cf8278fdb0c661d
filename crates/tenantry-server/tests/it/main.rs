//! Integration tests: the real router on a random port, a fresh data dir each.

mod attempts;
mod audit;
mod binary;
mod contract;
mod control_plane;
mod crash;
mod data;
mod disk_full;
mod edges;
mod fuzz_corpus;
mod hardening;
mod identity;
mod keep_alive;
mod limits;
mod migrate;
mod mobility;
mod monitor;
mod oracle;
use tenantry_test_postgres as pg;
mod redis_limits;
mod served;
mod sessions;
mod slow_clients;
mod structure;
mod support;
mod tmpfs;

const BACKEND: support::Backend = support::Backend::Sqlite;
