//! Tenant data on SQLite, reached in place. sqlx's SQLite driver runs every
//! connection on a worker thread and hands each statement over a channel:
//! two thread wake-ups per statement, which profiling showed to be most of a
//! request's CPU, and a thread per open tenant database. These rusqlite
//! connections (the same SQLite library) run statements on the request's own
//! thread instead: reads on a few reader connections, and each write
//! transaction whole on the database's one writer connection (writers queue
//! on an async lock, not in SQLite's sleeping busy handler). sqlx still
//! creates and migrates the databases.

use crate::store::{StoreError, StoreResult};
use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tokio::sync::Mutex;

/// Maps rusqlite errors once, as `db_error` does sqlx's: a unique violation
/// names its field, a busy database is unavailable.
pub(super) fn direct_error(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, msg)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            // "UNIQUE constraint failed: record_uniques.tenant_id, …"
            let field = msg
                .as_deref()
                .and_then(|m| m.rsplit(['.', '_', '\'']).find(|s| !s.is_empty()))
                .unwrap_or("id")
                .to_owned();
            StoreError::Conflict(field)
        }
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Internal(format!("sqlite: {e}")),
    }
}

/// A connection to an existing database (WAL mode: sqlx set it at creation).
fn connect(path: &Path) -> StoreResult<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(direct_error)?;
    // As for the sqlx pools: thousands of tenant databases may be open, so
    // each connection keeps a small page cache.
    conn.execute_batch(
        "PRAGMA cache_size = -512; PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;",
    )
    .map_err(direct_error)?;
    // Statements run on the request's thread: another process holding the
    // database (a migration, a backup) makes it 503 soon rather than park
    // the thread for long.
    conn.busy_timeout(std::time::Duration::from_secs(1))
        .map_err(direct_error)?;
    Ok(conn)
}

/// Connections wait their turn on async locks (a busy one never parks a
/// worker thread); the statements themselves run without yielding.
pub(super) struct Readers {
    conns: Vec<Mutex<Connection>>,
    next: AtomicUsize,
    /// Set by `close`: the database is being deleted.
    closed: AtomicBool,
}

/// Runs `write` in one `BEGIN IMMEDIATE` transaction, committed if it
/// returns Ok and rolled back otherwise. A transaction a failed rollback may
/// have left open is ended first (rusqlite ignores rollback errors on drop).
fn transact<R>(
    conn: &mut Connection,
    write: impl FnOnce(&Transaction<'_>) -> StoreResult<R>,
) -> StoreResult<R> {
    if !conn.is_autocommit() {
        conn.execute_batch("ROLLBACK").map_err(direct_error)?;
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(direct_error)?;
    let result = write(&tx)?;
    tx.commit().map_err(direct_error)?;
    Ok(result)
}

impl Readers {
    /// `n` reader connections; with `query_only` they refuse writes (a
    /// database with a separate `Writer`), without it the first one may
    /// also write (see `write`).
    pub(super) fn open(path: &Path, n: usize, query_only: bool) -> StoreResult<Self> {
        let conns = (0..n.max(1))
            .map(|_| {
                let conn = connect(path)?;
                if query_only {
                    conn.execute_batch("PRAGMA query_only = 1;")
                        .map_err(direct_error)?;
                }
                Ok(Mutex::new(conn))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Self {
            conns,
            next: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        })
    }

    /// Waits for every connection to be idle (an in-flight write finishes),
    /// then refuses all further use: the database is about to be deleted.
    pub(super) async fn close(&self) {
        let mut held = Vec::with_capacity(self.conns.len());
        for conn in &self.conns {
            held.push(conn.lock().await);
        }
        self.closed.store(true, Ordering::SeqCst);
    }

    fn check_open(&self) -> StoreResult<()> {
        if self.closed.load(Ordering::SeqCst) {
            Err(StoreError::NotFound)
        } else {
            Ok(())
        }
    }

    /// Runs `read` on a free connection (or waits for the next in turn);
    /// the statements run without yielding.
    pub(super) async fn read<R>(
        &self,
        read: impl FnOnce(&Connection) -> StoreResult<R>,
    ) -> StoreResult<R> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.conns.len();
        let free = (0..n).find_map(|i| self.conns[(start + i) % n].try_lock().ok());
        let conn = match free {
            Some(conn) => conn,
            None => self.conns[start % n].lock().await,
        };
        self.check_open()?;
        read(&conn)
    }

    /// A write transaction on the first connection, for a database whose
    /// one connection both reads and writes (a dedicated database: one
    /// connection halves what an open one costs, and only its own tenant's
    /// requests, at most the per-tenant concurrency cap, ever wait here).
    pub(super) async fn write<R>(
        &self,
        write: impl FnOnce(&Transaction<'_>) -> StoreResult<R>,
    ) -> StoreResult<R> {
        let mut conn = self.conns[0].lock().await;
        self.check_open()?;
        transact(&mut conn, write)
    }

    /// Statements outside a transaction (index DDL), on the first connection.
    pub(super) async fn execute_batch(&self, sql: &str) -> StoreResult<()> {
        let conn = self.conns[0].lock().await;
        self.check_open()?;
        conn.execute_batch(sql).map_err(direct_error)
    }
}

/// A database's one writer connection, opened at the first write: most
/// requests only read, and a dedicated database the LRU let go is re-opened
/// by a read far more often than by a write.
pub(super) struct Writer {
    path: PathBuf,
    conn: tokio::sync::OnceCell<Mutex<Connection>>,
}

impl Writer {
    pub(super) fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            conn: tokio::sync::OnceCell::new(),
        }
    }

    async fn conn(&self) -> StoreResult<&Mutex<Connection>> {
        self.conn
            .get_or_try_init(|| async { connect(&self.path).map(Mutex::new) })
            .await
    }

    /// One write transaction (see `transact`). Writers wait their turn on an
    /// async lock; the transaction itself runs without yielding.
    pub(super) async fn write<R>(
        &self,
        write: impl FnOnce(&Transaction<'_>) -> StoreResult<R>,
    ) -> StoreResult<R> {
        let mut conn = self.conn().await?.lock().await;
        transact(&mut conn, write)
    }

    /// Statements outside a transaction (index DDL).
    pub(super) async fn execute_batch(&self, sql: &str) -> StoreResult<()> {
        self.conn()
            .await?
            .lock()
            .await
            .execute_batch(sql)
            .map_err(direct_error)
    }
}
