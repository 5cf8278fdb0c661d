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
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tokio::sync::{Mutex, watch};

/// Maps rusqlite errors once, as `db_error` does sqlx's: a unique violation
/// names its field, a busy database is unavailable.
pub(super) fn direct_error(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, msg)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            StoreError::Conflict(crate::store::conflict_field(msg.as_deref()))
        }
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy
                    | rusqlite::ErrorCode::DatabaseLocked
                    | rusqlite::ErrorCode::DiskFull
            ) =>
        {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Internal(format!("sqlite: {e}")),
    }
}

/// Page cache of the shared database's connections (a large database a few
/// connections share).
pub(super) const SHARED_CACHE_KIB: u32 = 512;
/// Page cache of a dedicated database's one connection: hundreds may be open
/// at once, and a miss costs a read from the OS's cache, not the disk.
pub(super) const DEDICATED_CACHE_KIB: u32 = 128;

/// A connection to an existing database (WAL mode: sqlx set it at creation)
/// keeping at most `cache_kib` of pages.
pub(super) fn connect(path: &Path, cache_kib: u32) -> StoreResult<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(direct_error)?;
    // synchronous: as `super::SYNCHRONOUS` (each commit on disk before it
    // is acknowledged). temp_store: the group commit's savepoint journals stay in memory
    // instead of spilling into temporary files past 64 KiB.
    conn.execute_batch(&format!(
        "PRAGMA cache_size = -{cache_kib}; PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL; \
         PRAGMA temp_store = MEMORY;"
    ))
    .map_err(direct_error)?;
    // Room for every statement a request path runs, transaction control
    // included (rusqlite's default of 16 would evict and re-parse).
    conn.set_prepared_statement_cache_capacity(32);
    // Statements run on the request's thread: another process holding the
    // database (a migration, a backup) makes it 503 soon rather than park
    // the thread for long.
    conn.busy_timeout(std::time::Duration::from_secs(1))
        .map_err(direct_error)?;
    Ok(conn)
}

/// Runs work that may take long — a scan, an index build, a bulk load, a
/// purge — so that it does not stall the async worker's other tasks: on a
/// multi-thread runtime the worker hands its queue to another thread for
/// the duration (`block_in_place`). The statements still run on this
/// thread, as every statement here does; point reads and writes skip this,
/// the hand-off costing more than they take. (A current-thread runtime has
/// no other thread to hand to: the work runs inline there.)
pub(super) fn long<R>(work: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// Connections wait their turn on async locks (a busy one never parks a
/// worker thread); the statements themselves run without yielding.
pub(super) struct Readers {
    conns: Vec<Mutex<Connection>>,
    next: AtomicUsize,
    /// Set by `close`: the database is being deleted.
    closed: AtomicBool,
}

/// One transaction-control statement, prepared once per connection (each
/// write runs several: parsing them anew was measurable per request).
fn control(conn: &Connection, sql: &str) -> StoreResult<()> {
    conn.prepare_cached(sql)
        .and_then(|mut statement| statement.execute([]))
        .map(|_| ())
        .map_err(direct_error)
}

/// Runs `write` in one `BEGIN IMMEDIATE` transaction, committed if it
/// returns Ok and rolled back otherwise. A transaction a failed rollback may
/// have left open is ended first.
fn transact<R>(
    conn: &Connection,
    write: impl FnOnce(&Connection) -> StoreResult<R>,
) -> StoreResult<R> {
    if !conn.is_autocommit() {
        control(conn, "ROLLBACK")?;
    }
    control(conn, "BEGIN IMMEDIATE")?;
    // At `synchronous = FULL` the commit waits for its fsync: milliseconds
    // in which the worker's other tasks would sit behind it (`long`).
    let outcome = write(conn).and_then(|result| long(|| control(conn, "COMMIT")).map(|()| result));
    if outcome.is_err() && !conn.is_autocommit() {
        let _ = control(conn, "ROLLBACK");
    }
    outcome
}

impl Readers {
    /// `n` reader connections; with `query_only` they refuse writes (a
    /// database with a separate `Writer`), without it the first one may
    /// also write (see `write`).
    pub(super) fn open(
        path: &Path,
        n: usize,
        query_only: bool,
        cache_kib: u32,
    ) -> StoreResult<Self> {
        let conns = (0..n.max(1))
            .map(|_| {
                let conn = connect(path, cache_kib)?;
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
            Err(StoreError::Absent)
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

    /// `read` for statements that may take long (see `long`).
    pub(super) async fn read_long<R>(
        &self,
        read: impl FnOnce(&Connection) -> StoreResult<R>,
    ) -> StoreResult<R> {
        self.read(|c| long(|| read(c))).await
    }

    /// A write transaction on the first connection, for a database whose
    /// one connection both reads and writes (a dedicated database: one
    /// connection halves what an open one costs, and only its own tenant's
    /// requests, at most the per-tenant concurrency cap, ever wait here).
    pub(super) async fn write<R>(
        &self,
        write: impl FnOnce(&Connection) -> StoreResult<R>,
    ) -> StoreResult<R> {
        let conn = self.conns[0].lock().await;
        self.check_open()?;
        transact(&conn, write)
    }

    /// Statements outside a transaction (index DDL), on the first connection.
    pub(super) async fn execute_batch(&self, sql: &str) -> StoreResult<()> {
        let conn = self.conns[0].lock().await;
        self.check_open()?;
        long(|| conn.execute_batch(sql)).map_err(direct_error)
    }
}

/// Most writes one shared transaction may hold: bounds how long the first
/// of them waits for its commit.
const MAX_BATCH: usize = 64;

/// The shared database's one writer connection (a dedicated database writes
/// on its only connection, `Readers::write`), opened at the first write:
/// most requests only read.
///
/// Group commit: writes that queue up behind one another share a
/// transaction. Each runs in its own savepoint (a failing one undoes only
/// itself), and the transaction is committed when no other write is waiting
/// (or `MAX_BATCH` have joined); none of them returns before that commit.
/// A commit writes each touched page to the WAL once for the whole group
/// instead of once per request: creates on the shared database all wait for
/// this one connection, and the page writes were most of their cost.
pub(super) struct Writer {
    path: PathBuf,
    state: tokio::sync::OnceCell<Arc<Mutex<WriterState>>>,
    /// Writes waiting for the connection for the first time.
    queued: AtomicUsize,
}

struct WriterState {
    conn: Connection,
    batch: Option<Batch>,
    next_batch: u64,
    /// Set right after the state is made (the checkpointer refers to it);
    /// dropped with it, which stops the checkpointer's thread.
    checkpointer: Option<Checkpointer>,
}

/// How often the checkpointer moves the WAL's pages into the database.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// WAL pages past which the writer checkpoints itself after all, should the
/// checkpointer fall behind (SQLite's own default is 1,000).
const WRITER_CHECKPOINT_PAGES: u32 = 65_536;

/// Checkpoints a busy database's WAL from a thread of its own. SQLite's
/// automatic checkpoint runs inside the commit that crosses 1,000 WAL pages:
/// on the writer, holding every queued write (and a runtime worker thread)
/// through page copies and an fsync of everything written since the last
/// one. Once a second, in the background, this copies each page changed
/// many times meanwhile only once.
///
/// Under a steady stream of commits a checkpoint that never waits for the
/// writer never catches up with it either, and SQLite starts the WAL over
/// only once every page in it has been copied: the WAL would grow until the
/// writer's own checkpoint (`WRITER_CHECKPOINT_PAGES`) ran inline after all.
/// So the checkpointer copies in two background passes (the second only
/// what was written during the first), then holds the writer (an async
/// lock: waiting writes park no thread) for the little written meanwhile,
/// committing any open batch first. The next write starts the WAL from its
/// beginning. Stops when the writer is dropped.
struct Checkpointer {
    _stop: std::sync::mpsc::Sender<()>,
}

/// One PASSIVE checkpoint (never waits for readers or the writer): the
/// pages the WAL held when it began (0: nothing written since it started
/// over). What is written while it runs stays for the next one.
fn checkpoint(conn: &Connection) -> StoreResult<i64> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
        .map_err(direct_error)
}

impl Checkpointer {
    fn start(path: &Path, writer: std::sync::Weak<Mutex<WriterState>>) -> StoreResult<Self> {
        // Checkpointing reads pages once: no cache worth keeping.
        let conn = connect(path, 64)?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_EVERY)
                {
                    if let Err(e) = Self::round(&conn, &writer) {
                        tracing::warn!(error = %e, "WAL checkpoint failed");
                    }
                }
            })
            .map_err(|e| StoreError::Internal(format!("starting the checkpointer: {e}")))?;
        Ok(Self { _stop: stop })
    }

    fn round(conn: &Connection, writer: &std::sync::Weak<Mutex<WriterState>>) -> StoreResult<()> {
        checkpoint(conn)?;
        if checkpoint(conn)? == 0 {
            return Ok(());
        }
        let Some(writer) = writer.upgrade() else {
            return Ok(());
        };
        let mut state = writer.blocking_lock();
        state.commit()?;
        checkpoint(conn).map(drop)
    }
}

/// The open transaction several writes share.
struct Batch {
    id: u64,
    members: usize,
    /// The commit's outcome, for the members waiting on it.
    done: watch::Sender<Option<StoreResult<()>>>,
}

/// Counts a write as queued while it waits for the connection (and stops
/// counting it if the request is dropped meanwhile).
struct Queued<'a>(&'a AtomicUsize);

impl<'a> Queued<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl WriterState {
    /// The open batch, or a new one (`BEGIN IMMEDIATE`). A transaction left
    /// open without a batch (a failed rollback) is ended first.
    fn batch(&mut self) -> StoreResult<(u64, watch::Receiver<Option<StoreResult<()>>>)> {
        if self.batch.is_none() {
            if !self.conn.is_autocommit() {
                control(&self.conn, "ROLLBACK")?;
            }
            control(&self.conn, "BEGIN IMMEDIATE")?;
            self.next_batch += 1;
            self.batch = Some(Batch {
                id: self.next_batch,
                members: 0,
                done: watch::channel(None).0,
            });
        }
        let batch = self
            .batch
            .as_ref()
            .ok_or_else(|| StoreError::Internal("sqlite writer: no open transaction".into()))?;
        Ok((batch.id, batch.done.subscribe()))
    }

    /// Runs one write in a savepoint of the open batch. The outer error means
    /// the batch itself is broken (it has been rolled back for everyone).
    fn run<R>(
        &mut self,
        write: impl FnOnce(&Connection) -> StoreResult<R>,
    ) -> StoreResult<StoreResult<R>> {
        control(&self.conn, "SAVEPOINT w")?;
        let result = write(&self.conn);
        let end = match result {
            Ok(_) => control(&self.conn, "RELEASE w"),
            Err(_) => {
                control(&self.conn, "ROLLBACK TO w").and_then(|()| control(&self.conn, "RELEASE w"))
            }
        };
        if let Err(e) = end {
            self.finish(Err(e.clone()));
            return Err(e);
        }
        if let Some(batch) = &mut self.batch {
            batch.members += 1;
        }
        Ok(result)
    }

    fn full(&self) -> bool {
        self.batch.as_ref().is_some_and(|b| b.members >= MAX_BATCH)
    }

    /// Commits the open batch (if any) and tells its members how it went.
    fn commit(&mut self) -> StoreResult<()> {
        if self.batch.is_none() {
            return Ok(());
        }
        let outcome = control(&self.conn, "COMMIT");
        self.finish(outcome.clone());
        outcome
    }

    /// Ends the batch with `outcome`: rolled back unless it is Ok.
    fn finish(&mut self, outcome: StoreResult<()>) {
        if outcome.is_err() && !self.conn.is_autocommit() {
            let _ = control(&self.conn, "ROLLBACK");
        }
        if let Some(batch) = self.batch.take() {
            batch.done.send_replace(Some(outcome));
        }
    }
}

impl Writer {
    pub(super) fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            state: tokio::sync::OnceCell::new(),
            queued: AtomicUsize::new(0),
        }
    }

    async fn state(&self) -> StoreResult<&Mutex<WriterState>> {
        let state = self
            .state
            .get_or_try_init(|| async {
                let conn = connect(&self.path, SHARED_CACHE_KIB)?;
                conn.pragma_update(None, "wal_autocheckpoint", WRITER_CHECKPOINT_PAGES)
                    .map_err(direct_error)?;
                let state = Arc::new(Mutex::new(WriterState {
                    conn,
                    batch: None,
                    next_batch: 0,
                    checkpointer: None,
                }));
                let checkpointer = Checkpointer::start(&self.path, Arc::downgrade(&state))?;
                state.lock().await.checkpointer = Some(checkpointer);
                Ok::<_, StoreError>(state)
            })
            .await?;
        Ok(state)
    }

    /// One write, committed (with whichever writes queued alongside it)
    /// before this returns. Writers wait their turn on an async lock; the
    /// statements themselves run without yielding.
    pub(super) async fn write<R>(
        &self,
        write: impl FnOnce(&Connection) -> StoreResult<R>,
    ) -> StoreResult<R> {
        let cell = self.state().await?;
        let mut state = {
            let _queued = Queued::enter(&self.queued);
            cell.lock().await
        };
        let (batch, mut done) = state.batch()?;
        let result = state.run(write)?;
        if self.queued.load(Ordering::SeqCst) == 0 || state.full() {
            return state.commit().and(result);
        }
        // A write waiting behind this one will commit the batch. Should it
        // be dropped before its turn, this one commits when it gets the
        // connection back.
        drop(state);
        loop {
            let mut state = tokio::select! {
                biased;
                outcome = done.wait_for(Option::is_some) => {
                    let outcome = match outcome {
                        Ok(outcome) => outcome.clone().unwrap_or(Ok(())),
                        Err(_) => Err(StoreError::Internal("sqlite writer: batch vanished".into())),
                    };
                    return outcome.and(result);
                }
                state = cell.lock() => state,
            };
            if state.batch.as_ref().is_some_and(|b| b.id == batch) {
                return state.commit().and(result);
            }
            if let Some(outcome) = done.borrow().clone() {
                return outcome.and(result);
            }
        }
    }

    /// Statements outside a transaction (index DDL), after committing what
    /// is pending.
    pub(super) async fn execute_batch(&self, sql: &str) -> StoreResult<()> {
        let mut state = self.state().await?.lock().await;
        state.commit()?;
        long(|| state.conn.execute_batch(sql)).map_err(direct_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With one worker thread, a task inside `long` waits for another task
    /// to run: it can only if `long` gave the worker's queue away.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn long_work_leaves_the_worker_to_other_tasks() {
        let (ran, heard) = std::sync::mpsc::channel();
        let waiting =
            tokio::spawn(
                async move { long(|| heard.recv_timeout(std::time::Duration::from_secs(10))) },
            );
        // Spawned from outside the worker, after the waiting task is queued.
        tokio::task::yield_now().await;
        let other = tokio::spawn(async move {
            let _ = ran.send(());
        });
        let outcome = waiting.await.expect("task");
        assert!(
            outcome.is_ok(),
            "the other task never ran while `long` worked"
        );
        other.await.expect("task");
    }

    /// On a current-thread runtime it simply runs.
    #[tokio::test]
    async fn long_work_runs_inline_on_a_current_thread_runtime() {
        assert_eq!(long(|| 7), 7);
    }

    /// A database in WAL mode made with `schema`, in a fresh directory.
    fn wal_database(schema: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("t.db");
        Connection::open(&path)
            .and_then(|c| c.execute_batch(&format!("PRAGMA journal_mode = WAL; {schema}")))
            .expect("create");
        (dir, path)
    }

    /// Writes that queue behind one another share commits; one that fails
    /// undoes only itself, and every other one is there once they return.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_writes_share_commits_and_fail_alone() {
        let (_dir, path) = wal_database("CREATE TABLE t (k INTEGER PRIMARY KEY);");
        let writer = std::sync::Arc::new(Writer::new(&path));
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let writer = writer.clone();
                tokio::spawn(async move {
                    writer
                        .write(|conn| {
                            // Holds the connection a moment, so others queue.
                            std::thread::sleep(std::time::Duration::from_millis(2));
                            // Every fourth write collides with the one before it.
                            let k = if i % 4 == 3 { i - 1 } else { i };
                            conn.execute("INSERT INTO t (k) VALUES (?1)", [k])
                                .map_err(direct_error)
                        })
                        .await
                })
            })
            .collect();
        let mut conflicts = 0;
        for task in tasks {
            match task.await.expect("task") {
                Ok(_) => {}
                Err(StoreError::Conflict(_)) => conflicts += 1,
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!(conflicts, 10);
        let batches = writer.state().await.expect("state").lock().await.next_batch;
        assert!(batches < 40, "{batches} commits for 40 writes");
        let reader = Connection::open(&path).expect("reader");
        let rows: i64 = reader
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("count");
        assert_eq!(rows, 30, "every successful write committed, no failed one");
    }

    /// The writer leaves checkpoints to the background thread: its pages
    /// reach the database file within a second or so, without a commit
    /// having crossed SQLite's own 1,000-page threshold.
    #[tokio::test]
    async fn the_checkpointer_moves_the_wal_into_the_database() {
        let (_dir, path) = wal_database("CREATE TABLE t (v TEXT);");
        let before = std::fs::metadata(&path).expect("size").len();
        let writer = Writer::new(&path);
        writer
            .write(|conn| {
                for _ in 0..200 {
                    conn.execute("INSERT INTO t (v) VALUES (?1)", ["x".repeat(2000)])
                        .map_err(direct_error)?;
                }
                Ok(())
            })
            .await
            .expect("write");
        assert_eq!(
            std::fs::metadata(&path).expect("size").len(),
            before,
            "still in the WAL"
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::metadata(&path).expect("size").len() == before {
            assert!(std::time::Instant::now() < deadline, "never checkpointed");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Under writes that never pause, the checkpointer still gets the WAL
    /// started over (by finishing with the writer held). Each commit adds the
    /// one page it changes to the WAL: never started over, it would hold
    /// them all.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_starts_over_under_a_steady_stream_of_writes() {
        let (dir, path) = wal_database(
            "CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB); INSERT INTO t VALUES (1, NULL);",
        );
        let writer = Arc::new(Writer::new(&path));
        let until = std::time::Instant::now() + std::time::Duration::from_secs(4);
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let writer = writer.clone();
                tokio::spawn(async move {
                    while std::time::Instant::now() < until {
                        writer
                            .write(|conn| {
                                conn.execute("UPDATE t SET v = randomblob(200) WHERE k = 1", [])
                                    .map_err(direct_error)
                            })
                            .await
                            .expect("write");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("task");
        }
        let commits = writer.state().await.expect("state").lock().await.next_batch;
        let wal = std::fs::metadata(dir.path().join("t.db-wal"))
            .expect("wal")
            .len();
        assert!(
            wal < commits * 4096 / 2,
            "WAL {wal} bytes after {commits} commits: it never started over"
        );
    }
}
