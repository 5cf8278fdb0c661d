//! The behavioural suite again, on PostgreSQL: the same source files as the
//! SQLite run (`tests/it`), compiled with `BACKEND = Postgres`, so the two
//! engines cannot drift apart. Plus what only PostgreSQL has: row-level
//! security and the runtime role.

#[path = "../it/attempts.rs"]
mod attempts;
#[path = "../it/audit.rs"]
mod audit;
#[path = "../it/contract.rs"]
mod contract;
#[path = "../it/control_plane.rs"]
mod control_plane;
#[path = "../it/crash.rs"]
mod crash;
#[path = "../it/data.rs"]
mod data;
mod disk_full;
#[path = "../it/edges.rs"]
mod edges;
#[path = "../it/hardening.rs"]
mod hardening;
#[path = "../it/identity/mod.rs"]
mod identity;
#[path = "../it/keep_alive.rs"]
mod keep_alive;
#[path = "../it/limits.rs"]
mod limits;
#[path = "../it/migrate.rs"]
mod migrate;
#[path = "../it/mobility.rs"]
mod mobility;
#[path = "../it/monitor.rs"]
mod monitor;
#[path = "../it/oracle.rs"]
mod oracle;
use tenantry_test_postgres as pg;
mod placement;
mod registry;
mod resilience;
mod rls;
#[path = "../it/served.rs"]
mod served;
#[path = "../it/sessions.rs"]
mod sessions;
#[path = "../it/slow_clients.rs"]
mod slow_clients;
mod statistics;
#[path = "../it/support.rs"]
mod support;
mod timeouts;
#[path = "../it/tmpfs.rs"]
mod tmpfs;

const BACKEND: support::Backend = support::Backend::Postgres;
