//! Schema versions: what a database lacks, and whether opening it may apply
//! that. A server must not quietly change the schema of a database that other
//! instances (or thousands of tenant databases) share: it initializes a fresh
//! database, and refuses one that is behind until `tenantry migrate` (or
//! `serve --migrate`) has brought everything up to date.

use super::{StoreError, StoreResult};
use sqlx::migrate::{Migrate, Migrator};

/// What opening a store may do to its schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MigratePolicy {
    /// Set up a fresh database; refuse one with pending migrations.
    InitializeOnly,
    /// Apply every pending migration.
    Apply,
}

/// The newest version a migrator knows.
pub fn latest_version(migrator: &Migrator) -> i64 {
    migrator.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Whether `migrator` must run on `conn` under `policy`; `Pending` when the
/// database is behind and the policy forbids catching up.
pub(crate) async fn must_run(
    migrator: &Migrator,
    conn: &mut (impl Migrate + Send),
    policy: MigratePolicy,
    what: &str,
) -> StoreResult<bool> {
    let failed = |e: sqlx::migrate::MigrateError| {
        StoreError::Internal(format!("reading the schema version of {what}: {e}"))
    };
    conn.ensure_migrations_table().await.map_err(failed)?;
    let applied: Vec<i64> = conn
        .list_applied_migrations()
        .await
        .map_err(failed)?
        .into_iter()
        .map(|m| m.version)
        .collect();
    let pending: Vec<i64> = migrator
        .iter()
        .map(|m| m.version)
        .filter(|v| !applied.contains(v))
        .collect();
    match (pending.is_empty(), applied.is_empty(), policy) {
        (true, _, _) => Ok(false),
        (false, true, _) | (false, false, MigratePolicy::Apply) => Ok(true),
        (false, false, MigratePolicy::InitializeOnly) => Err(StoreError::Pending(format!(
            "{what} lacks migration(s) {pending:?}"
        ))),
    }
}
