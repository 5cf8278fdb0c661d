//! Point reads on the request's own thread. sqlx's SQLite driver runs every
//! connection on a worker thread and hands each statement over a channel:
//! two thread wake-ups per query, which profiling showed to be most of a
//! GET-by-id's CPU. A primary-key lookup takes microseconds, so these
//! connections (rusqlite, the same SQLite library) run it in place instead.
//! Writes stay on sqlx's single writer connection; WAL lets both coexist.

use crate::store::{StoreError, StoreResult};
use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

pub(super) struct Readers {
    conns: Vec<Mutex<Connection>>,
    next: AtomicUsize,
}

fn read_error(e: rusqlite::Error) -> StoreError {
    StoreError::Internal(format!("sqlite read: {e}"))
}

impl Readers {
    /// `n` connections to an existing database (in WAL mode: the writer set it).
    pub(super) fn open(path: &Path, n: usize) -> StoreResult<Self> {
        let conns = (0..n.max(1))
            .map(|_| {
                let conn = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(read_error)?;
                // A small page cache each, as for the sqlx pools: thousands
                // of tenant databases may be open.
                conn.execute_batch("PRAGMA cache_size = -512; PRAGMA query_only = 1;")
                    .map_err(read_error)?;
                conn.busy_timeout(std::time::Duration::from_secs(5))
                    .map_err(read_error)?;
                Ok(Mutex::new(conn))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Self {
            conns,
            next: AtomicUsize::new(0),
        })
    }

    /// Runs `read` on a free connection (or waits for the next in turn);
    /// the lock is held only while the statement runs, never across an await.
    pub(super) fn read<R>(
        &self,
        read: impl FnOnce(&Connection) -> rusqlite::Result<R>,
    ) -> StoreResult<R> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.conns.len();
        let free = (0..n).find_map(|i| self.conns[(start + i) % n].try_lock().ok());
        let conn = match free {
            Some(conn) => conn,
            None => self.conns[start % n]
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        };
        read(&conn).map_err(read_error)
    }
}
