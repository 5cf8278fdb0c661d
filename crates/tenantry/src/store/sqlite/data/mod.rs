//! The data plane on SQLite: shared tier in `shared.db`, dedicated tier in
//! `tenants/<id>.db`, both with the same schema. Dedicated databases open
//! lazily and are closed when idle or evicted (bounded, least recently used).
//! sqlx creates and migrates them; requests reach them in place
//! (`direct.rs`), without a connection thread per database.

mod sql;
mod tenant;
mod write;

use super::db_error;
use super::direct::{DEDICATED_CACHE_KIB, Readers, SHARED_CACHE_KIB, Writer, direct_error, long};
use crate::clock::{Clock, SystemClock};
use crate::ids::TenantId;
use crate::store::data::{DataPlane, TenantData};
use crate::store::migrate::{MigratePolicy, latest_version, must_run};
use crate::store::{StoreError, StoreResult};
use crate::{Isolation, Tenant};
use async_trait::async_trait;
use moka::future::Cache;
use rusqlite::Connection;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tenant::SqliteTenantData;

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/tenant/sqlite");

/// The tenant-data schema version of a migrated database.
pub(crate) fn tenant_schema_version() -> i64 {
    latest_version(&MIGRATIONS)
}

/// Page size of tenant databases created from now on (SQLite's default is
/// 4 KiB; a database keeps the size it was created with). The WAL logs whole
/// pages: a create changes a few bytes on each of half a dozen pages (records,
/// three indexes, usage, audit), so the page size is most of what a write
/// costs in WAL writes, their checksums and the fsyncs of checkpoints.
/// 2 KiB: creates +10-20% over 4 KiB in the load benchmark, reads unchanged,
/// lists within a few percent; 1 KiB wrote no faster and splits more records
/// into overflow pages.
const TENANT_PAGE_SIZE: u32 = 2048;

/// Opens a tenant database. Migrations run when it is created (and by the
/// migration command), not on every lazy re-open: with thousands of dedicated
/// tenants cycling through the open-database bound, that check would be paid
/// on a large share of requests.
async fn open_pool(path: &Path, create: bool, max_connections: u32) -> StoreResult<SqlitePool> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(create)
        .page_size(TENANT_PAGE_SIZE)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(super::SYNCHRONOUS)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5))
        // Thousands of small databases may be open: keep each one's page
        // cache and prepared statements small.
        .pragma("cache_size", "-512")
        .statement_cache_capacity(24);
    SqlitePoolOptions::new()
        .max_connections(max_connections)
        .min_connections(0)
        // Each sqlx connection is a thread with its own caches: one a
        // tenant stopped writing to should not outlive the burst by long.
        .idle_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .map_err(db_error)
}

/// Brings a tenant database's schema up to date, as far as `policy` allows.
async fn migrate(pool: &SqlitePool, policy: MigratePolicy, what: &str) -> StoreResult<()> {
    let mut conn = pool.acquire().await.map_err(db_error)?;
    if must_run(&MIGRATIONS, &mut *conn, policy, what).await? {
        MIGRATIONS
            .run_direct(&mut *conn)
            .await
            .map_err(|e| StoreError::Internal(format!("migrating {what}: {e}")))?;
    }
    Ok(())
}

pub struct SqliteDataPlane {
    dir: PathBuf,
    shared: Database,
    dedicated: Cache<TenantId, Database>,
    /// Stamps the data chains' entries.
    clock: Arc<dyn Clock>,
}

/// One open tenant database: the shared one has reader connections and a
/// writer of its own; a dedicated one a single connection for both.
#[derive(Clone)]
struct Database {
    readers: Arc<Readers>,
    writer: Option<Arc<Writer>>,
}

impl Database {
    fn shared(path: &Path) -> StoreResult<Self> {
        Ok(Self {
            readers: Arc::new(Readers::open(path, 4, true, SHARED_CACHE_KIB)?),
            writer: Some(Arc::new(Writer::new(path))),
        })
    }

    fn dedicated(path: &Path) -> StoreResult<Self> {
        Ok(Self {
            readers: Arc::new(Readers::open(path, 1, false, DEDICATED_CACHE_KIB)?),
            writer: None,
        })
    }

    /// One write transaction (see `Writer::write`, `Readers::write`).
    async fn write<R>(&self, write: impl FnOnce(&Connection) -> StoreResult<R>) -> StoreResult<R> {
        match &self.writer {
            Some(writer) => writer.write(write).await,
            None => self.readers.write(write).await,
        }
    }

    /// `write` for transactions that may take long (see `direct::long`).
    async fn write_long<R>(
        &self,
        write: impl FnOnce(&Connection) -> StoreResult<R>,
    ) -> StoreResult<R> {
        self.write(|tx| long(|| write(tx))).await
    }

    /// Statements outside a transaction (index DDL: long, see `direct::long`).
    async fn execute_batch(&self, sql: &str) -> StoreResult<()> {
        match &self.writer {
            Some(writer) => writer.execute_batch(sql).await,
            None => self.readers.execute_batch(sql).await,
        }
    }
}

/// Creates (if asked) and migrates a database through sqlx, then lets the
/// sqlx connection go.
async fn prepare(path: &Path, create: bool, policy: MigratePolicy, what: &str) -> StoreResult<()> {
    let pool = open_pool(path, create, 1).await?;
    let migrated = migrate(&pool, policy, what).await;
    pool.close().await;
    migrated
}

impl SqliteDataPlane {
    /// `max_open` bounds how many dedicated databases are open at once;
    /// `policy` says whether the shared database may be migrated.
    pub async fn open(data_dir: &Path, max_open: u64, policy: MigratePolicy) -> StoreResult<Self> {
        let dir = data_dir.join("tenants");
        std::fs::create_dir_all(&dir)
            .map_err(|e| StoreError::Internal(format!("creating {}: {e}", dir.display())))?;
        let path = data_dir.join("shared.db");
        prepare(&path, true, policy, "the shared tenant database").await?;
        Ok(Self {
            shared: Database::shared(&path)?,
            dedicated: Cache::builder()
                .max_capacity(max_open)
                .time_to_idle(Duration::from_secs(300))
                .build(),
            dir,
            clock: Arc::new(SystemClock),
        })
    }

    /// Audit entries stamped by `clock` (the system clock by default).
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        Self { clock, ..self }
    }

    fn path(&self, tenant: TenantId) -> PathBuf {
        self.dir.join(format!("{tenant}.db"))
    }

    async fn dedicated(&self, tenant: TenantId) -> StoreResult<Database> {
        let path = self.path(tenant);
        self.dedicated
            .try_get_with(tenant, async move {
                // Purged, or moved to another tier: the caller looks again.
                if !path.exists() {
                    return Err(StoreError::Absent);
                }
                Database::dedicated(&path)
            })
            .await
            .map_err(|e: Arc<StoreError>| (*e).clone())
    }

    /// How many dedicated databases are open now (bounded by `max_open`).
    pub async fn open_dedicated(&self) -> u64 {
        self.dedicated.run_pending_tasks().await;
        self.dedicated.entry_count()
    }
}

#[async_trait]
impl DataPlane for SqliteDataPlane {
    async fn provision(&self, tenant: &Tenant) -> StoreResult<()> {
        let db = match tenant.isolation {
            Isolation::Shared => self.shared.clone(),
            Isolation::Dedicated => {
                let path = self.path(tenant.id);
                prepare(&path, true, MigratePolicy::Apply, "a new tenant database").await?;
                let db = Database::dedicated(&path)?;
                self.dedicated.insert(tenant.id, db.clone()).await;
                db
            }
        };
        // The mark that the tenant's data lives here (see `writable`).
        let id = tenant.id.to_string();
        db.write(|tx| {
            tx.execute(
                "INSERT INTO usage (tenant_id) VALUES (?1) ON CONFLICT (tenant_id) DO NOTHING",
                [&id],
            )
            .map_err(direct_error)?;
            Ok(())
        })
        .await
    }

    fn schema_version(&self) -> i64 {
        tenant_schema_version()
    }

    async fn migrate_tenant(&self, tenant: &Tenant) -> StoreResult<()> {
        if tenant.isolation == Isolation::Dedicated {
            let what = format!("tenant {}'s database", tenant.slug);
            let path = self.path(tenant.id);
            if !path.exists() {
                return Err(StoreError::Internal(format!(
                    "tenant database {} is missing",
                    path.display()
                )));
            }
            prepare(&path, false, MigratePolicy::Apply, &what).await?;
            // Connections opened before the migration keep an old schema cache.
            self.dedicated.invalidate(&tenant.id).await;
        }
        Ok(())
    }

    async fn handle(&self, tenant: &Tenant) -> StoreResult<Arc<dyn TenantData>> {
        let db = match tenant.isolation {
            Isolation::Shared => self.shared.clone(),
            Isolation::Dedicated => self.dedicated(tenant.id).await?,
        };
        Ok(Arc::new(SqliteTenantData {
            db,
            tenant: tenant.id.to_string(),
            tenant_id: tenant.id,
            clock: self.clock.clone(),
        }))
    }

    async fn purge(&self, tenant: &Tenant) -> StoreResult<()> {
        match tenant.isolation {
            Isolation::Shared => {
                let id = tenant.id.to_string();
                self.shared
                    .write_long(|tx| {
                        for table in ["record_uniques", "records", "collections", "usage"] {
                            tx.execute(&format!("DELETE FROM {table} WHERE tenant_id = ?1"), [&id])
                                .map_err(direct_error)?;
                        }
                        Ok(())
                    })
                    .await
            }
            Isolation::Dedicated => {
                // An in-flight write finishes first; handles still held by
                // requests refuse further use instead of writing into a
                // deleted file.
                if let Some(db) = self.dedicated.get(&tenant.id).await {
                    db.readers.close().await;
                }
                self.dedicated.invalidate(&tenant.id).await;
                let path = self.path(tenant.id);
                for suffix in ["", "-wal", "-shm"] {
                    let file = PathBuf::from(format!("{}{suffix}", path.display()));
                    match std::fs::remove_file(&file) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            return Err(StoreError::Internal(format!(
                                "removing {}: {e}",
                                file.display()
                            )));
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::NewAuditEntry;
    use crate::ids::RecordId;
    use crate::record::{CollectionDef, Record};
    use crate::tenant::{Slug, TenantStatus};
    use chrono::Utc;
    use serde_json::Value;

    /// A data plane in a fresh directory with one dedicated tenant provisioned.
    async fn provisioned(slug: &str) -> (tempfile::TempDir, SqliteDataPlane, Tenant) {
        let dir = tempfile::tempdir().expect("dir");
        let plane = SqliteDataPlane::open(dir.path(), 16, MigratePolicy::Apply)
            .await
            .expect("open");
        let now = Utc::now();
        let tenant = Tenant {
            id: TenantId::new(),
            slug: Slug::parse(slug).expect("slug"),
            name: slug.into(),
            plan: "enterprise".into(),
            status: TenantStatus::Active,
            isolation: Isolation::Dedicated,
            organization_id: None,
            domain: None,
            metadata: Value::Null,
            branding: Value::Null,
            created_at: now,
            updated_at: now,
            placement: None,
        };
        plane.provision(&tenant).await.expect("provision");
        (dir, plane, tenant)
    }

    /// A request still holding a dedicated tenant's handle when the tenant
    /// is purged must not write into (or read from) the deleted file.
    #[tokio::test]
    async fn a_handle_held_across_a_purge_refuses_further_use() {
        let (dir, plane, tenant) = provisioned("purged").await;
        let now = Utc::now();
        let handle = plane.handle(&tenant).await.expect("handle");
        let def = CollectionDef::implicit("notes", now);
        let audit = NewAuditEntry::new("u", "tenant", "collection.create", "notes");
        handle
            .create_collection_if_absent(&def, &audit)
            .await
            .expect("write before the purge");
        plane.purge(&tenant).await.expect("purge");
        assert!(
            !dir.path()
                .join("tenants")
                .join(format!("{}.db", tenant.id))
                .exists()
        );
        let record = Record {
            id: RecordId::new(),
            data: serde_json::json!({"n": 1}),
            version: 1,
            created_at: now,
            updated_at: now,
            created_by: None,
        };
        let refused = handle.insert_record(&def, &record, None, &audit).await;
        // Absent, not NotFound: the caller re-resolves the tenant (it may have
        // moved) instead of reporting a missing record.
        assert!(matches!(refused, Err(StoreError::Absent)), "{refused:?}");
        let listed = handle.collections().await;
        assert!(
            matches!(listed, Err(StoreError::Absent | StoreError::NotFound)),
            "{listed:?}"
        );
    }

    /// Every kind of connection syncs each commit before it is acknowledged
    /// (`synchronous = FULL`, 2): the pools' and the direct ones'.
    #[tokio::test]
    async fn every_connection_syncs_each_commit() {
        let (dir, plane, tenant) = provisioned("synced").await;
        let pool = open_pool(&plane.path(tenant.id), false, 1)
            .await
            .expect("pool");
        let pooled: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&pool)
            .await
            .expect("pragma");
        let direct: i64 = super::super::direct::connect(&dir.path().join("shared.db"), 64)
            .expect("connect")
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .expect("pragma");
        let control = crate::store::sqlite::SqliteControlStore::open(
            &dir.path().join("control.db"),
            MigratePolicy::Apply,
        )
        .await
        .expect("control store");
        let controlled: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&control.pool)
            .await
            .expect("pragma");
        assert_eq!((pooled, direct, controlled), (2, 2, 2));
    }

    /// New tenant databases, shared and dedicated, get the smaller pages.
    #[tokio::test]
    async fn new_tenant_databases_use_the_tenant_page_size() {
        let (dir, plane, tenant) = provisioned("paged").await;
        for path in [dir.path().join("shared.db"), plane.path(tenant.id)] {
            let size: u32 = Connection::open(&path)
                .and_then(|c| c.query_row("PRAGMA page_size", [], |r| r.get(0)))
                .expect("page size");
            assert_eq!(size, TENANT_PAGE_SIZE, "{}", path.display());
        }
    }
}
