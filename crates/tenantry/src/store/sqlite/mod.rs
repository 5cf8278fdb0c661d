//! The embedded default, on SQLite (WAL mode): the control store in one
//! file (`control`: tenants; `platform`: staff, plans, organizations;
//! `jobs`: the job queue; `identity`: tenant users and sessions; `audit`:
//! the chains), the data plane in `data`, and `direct`, the rusqlite
//! connections the data plane's hot path runs on. The PostgreSQL backend
//! has the same files.

mod audit;
mod control;
mod data;
mod direct;
mod identity;
mod jobs;
mod platform;

pub use control::SqliteControlStore;
pub use data::SqliteDataPlane;

use super::{StoreError, StoreResult};
use crate::audit::AuditChain;
use crate::tenant::Tenant;
use audit::ChainAt;
use sqlx::sqlite::{SqliteRow, SqliteSynchronous};
use sqlx::{Row, Sqlite, SqlitePool};
use std::str::FromStr;

/// Every commit is on disk before it is acknowledged. In WAL mode `NORMAL`
/// syncs only at checkpoints, so a power cut could lose the last commits a
/// client was told succeeded; `FULL` syncs the WAL at each commit (group
/// commit on the shared writer shares one sync among its batch).
pub(super) const SYNCHRONOUS: SqliteSynchronous = SqliteSynchronous::Full;

/// `NotFound` unless the tenant is live, checked inside the write
/// transaction (`BEGIN IMMEDIATE` serialises it with the deletion's): a
/// write racing a deletion never recreates a row the purge removes.
pub(super) async fn require_live(
    tx: &mut sqlx::Transaction<'static, Sqlite>,
    t: &Tenant,
) -> StoreResult<()> {
    let live: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM tenants WHERE id = ? AND status IN ('active', 'suspended')",
    )
    .bind(t.id.to_string())
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_error)?;
    live.map(|_| ()).ok_or(StoreError::NotFound)
}

/// The tenant's chain in the control store.
fn control_chain(t: &Tenant) -> ChainAt {
    ChainAt::tenant(AuditChain::Control, t.id)
}

/// Starts a write transaction. `BEGIN IMMEDIATE` takes the write lock up
/// front, so a transaction that reads before it writes cannot fail on the
/// read-to-write upgrade; the `Transaction` rolls back if it is dropped
/// unfinished (a cancelled request never leaves a pooled connection inside
/// an open transaction).
pub(super) async fn begin_write(
    pool: &SqlitePool,
) -> StoreResult<sqlx::Transaction<'static, Sqlite>> {
    pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)
}

/// Maps sqlx errors once: uniqueness → `Conflict(field)`, pool/IO → `Unavailable`.
pub(super) fn db_error(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(super::conflict_field(Some(db.message())))
        }
        // Busy or locked past the busy timeout, or the disk full: the
        // database is fine and a retry later may well succeed (a 503).
        sqlx::Error::Database(db)
            if db
                .code()
                .and_then(|c| c.parse::<i32>().ok())
                .is_some_and(|c| TRANSIENT_CODES.contains(&(c & 0xff))) =>
        {
            StoreError::Unavailable(e.to_string())
        }
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Internal(e.to_string()),
    }
}

/// SQLite's primary result codes for conditions that pass: BUSY, LOCKED, FULL.
const TRANSIENT_CODES: [i32; 3] = [5, 6, 13];

fn json_col(row: &SqliteRow, col: &str) -> StoreResult<serde_json::Value> {
    let text: String = row.try_get(col).map_err(db_error)?;
    serde_json::from_str(&text).map_err(|e| StoreError::Internal(format!("bad json in {col}: {e}")))
}

pub(super) fn uuid_col<T: FromStr>(row: &SqliteRow, col: &str) -> StoreResult<T> {
    let text: String = row.try_get(col).map_err(db_error)?;
    text.parse()
        .map_err(|_| StoreError::Internal(format!("bad id in {col}: {text:?}")))
}

pub(super) fn opt_uuid_col<T: FromStr>(row: &SqliteRow, col: &str) -> StoreResult<Option<T>> {
    let text: Option<String> = row.try_get(col).map_err(db_error)?;
    text.map(|t| {
        t.parse()
            .map_err(|_| StoreError::Internal(format!("bad id in {col}: {t:?}")))
    })
    .transpose()
}

fn to_json(v: &impl serde::Serialize) -> StoreResult<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
    use sqlx::{ConnectOptions, Connection};
    use std::time::Duration;

    /// A database still locked when the busy timeout runs out is a
    /// condition that passes (503 and Retry-After), not an internal error.
    #[tokio::test]
    async fn busy_past_the_timeout_is_unavailable_not_internal() {
        let dir = tempfile::tempdir().expect("dir");
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("busy.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_millis(20));
        let mut holder = options.connect().await.expect("connect");
        sqlx::query("CREATE TABLE t (x)")
            .execute(&mut holder)
            .await
            .expect("create");
        let mut other = options.connect().await.expect("connect");
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut holder)
            .await
            .expect("lock");
        let refused = sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut other)
            .await
            .expect_err("busy");
        assert!(matches!(db_error(refused), StoreError::Unavailable(_)));
        holder.close().await.expect("close");
    }
}
