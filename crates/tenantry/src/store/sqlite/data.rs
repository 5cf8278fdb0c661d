//! The data plane on SQLite: shared tier in `shared.db`, dedicated tier in
//! `tenants/<id>.db`, both with the same schema. Dedicated databases open
//! lazily and are closed when idle or evicted (bounded, least recently used).
//! sqlx creates and migrates them; requests reach them in place
//! (`direct.rs`), without a connection thread per database.

use super::audit::{self, ChainAt};
use super::db_error;
use super::direct::{DEDICATED_CACHE_KIB, Readers, SHARED_CACHE_KIB, Writer, direct_error, long};
use crate::audit::{AuditChain, AuditEntry, AuditFilter, NewAuditEntry};
use crate::ids::{RecordId, TenantId};
use crate::record::{CollectionDef, FilterOp, Operand, Record, RecordQuery, SortKey, json_path};
use crate::store::data::{DataPlane, GroupCounts, Restore, TenantData, Usage};
use crate::store::migrate::{MigratePolicy, latest_version, must_run};
use crate::store::{StoreError, StoreResult, check_quota, parse_time, strings, time_text};
use crate::{Isolation, Tenant};
use async_trait::async_trait;
use moka::future::Cache;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

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
        })
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

/// A handle bound to one tenant: every statement binds `self.tenant`.
struct SqliteTenantData {
    db: Database,
    tenant: String,
    tenant_id: TenantId,
}

/// A collection definition as stored.
type CollectionRow = (
    String,
    Option<String>,
    String,
    String,
    Option<String>,
    String,
    String,
);

const COLLECTION_COLUMNS: &str =
    "name, schema, unique_fields, indexed_fields, required_feature, created_at, updated_at";

fn read_collection(r: &rusqlite::Row<'_>) -> rusqlite::Result<CollectionRow> {
    r.try_into()
}

fn collection_def(row: CollectionRow) -> StoreResult<CollectionDef> {
    let (name, schema, unique, indexed, required_feature, created_at, updated_at) = row;
    let json = |text: &str, what: &str| {
        serde_json::from_str::<Value>(text)
            .map_err(|e| StoreError::Internal(format!("bad json in {what}: {e}")))
    };
    Ok(CollectionDef {
        name,
        schema: schema.map(|s| json(&s, "schema")).transpose()?,
        unique: strings(json(&unique, "unique_fields")?),
        indexed: strings(json(&indexed, "indexed_fields")?),
        required_feature,
        created_at: parse_time(&created_at)?,
        updated_at: parse_time(&updated_at)?,
    })
}

/// The writes' steps, each a statement or two on the open write
/// transaction (`tx`) of one tenant (`t`).
///
/// Every request write starts here: the tenant's usage row says its data
/// lives in this database (`Absent` without it: moved away, purged, or
/// never written before the mark existed) and takes writes (`Sealed`
/// while a job holds the copy). Returns the stored bytes, for the quota.
fn writable(tx: &Connection, t: &str) -> StoreResult<u64> {
    let row: Option<(i64, bool)> = tx
        .prepare_cached("SELECT storage_bytes, sealed FROM usage WHERE tenant_id = ?1")
        .map_err(direct_error)?
        .query_row([t], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(direct_error)?;
    match row {
        None => Err(StoreError::Absent),
        Some((_, true)) => Err(StoreError::Sealed),
        Some((bytes, false)) => Ok(bytes.max(0) as u64),
    }
}

fn add_usage(tx: &Connection, t: &str, records: i64, bytes: i64) -> StoreResult<()> {
    tx.prepare_cached(
        "INSERT INTO usage (tenant_id, records, storage_bytes) VALUES (?1, ?2, ?3)
         ON CONFLICT (tenant_id) DO UPDATE
         SET records = records + excluded.records, storage_bytes = storage_bytes + excluded.storage_bytes",
    )
    .map_err(direct_error)?
    .execute(params![t, records, bytes])
    .map_err(direct_error)?;
    Ok(())
}

/// The unique fields as stored now. Writes claim these rather than those
/// of the caller's definition, which may come from a cache that has not
/// yet seen another instance add a unique field.
fn stored_unique(tx: &Connection, t: &str, collection: &str) -> StoreResult<Vec<String>> {
    let text: Option<String> = tx
        .prepare_cached("SELECT unique_fields FROM collections WHERE tenant_id = ?1 AND name = ?2")
        .map_err(direct_error)?
        .query_row([t, collection], |r| r.get(0))
        .optional()
        .map_err(direct_error)?;
    Ok(text
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default())
}

/// Claims the record's values of `fields`; a taken one is `Conflict(field)`.
fn claim_uniques(
    tx: &Connection,
    t: &str,
    collection: &str,
    fields: &[String],
    record: &Record,
) -> StoreResult<()> {
    claim(tx, t, collection, fields, record, false)
}

/// Claims values as `claim_uniques` does, or (`take_over`) takes a claimed
/// value over: a restore copies rows read at different times, and a value
/// may still be claimed by a record whose newer version arrives later.
fn claim(
    tx: &Connection,
    t: &str,
    collection: &str,
    fields: &[String],
    record: &Record,
    take_over: bool,
) -> StoreResult<()> {
    let sql = if take_over {
        "INSERT INTO record_uniques (tenant_id, collection, field, value, record_id)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (tenant_id, collection, field, value) DO UPDATE SET record_id = excluded.record_id"
    } else {
        "INSERT INTO record_uniques (tenant_id, collection, field, value, record_id)
         VALUES (?1, ?2, ?3, ?4, ?5)"
    };
    for field in fields {
        let Some(value) = crate::record::field_value(&record.data, field).filter(|v| !v.is_null())
        else {
            continue;
        };
        tx.prepare_cached(sql)
            .map_err(direct_error)?
            .execute(params![
                t,
                collection,
                field,
                value.to_string(),
                record.id.to_string()
            ])
            .map_err(|e| match direct_error(e) {
                StoreError::Conflict(_) => StoreError::Conflict(field.clone()),
                other => other,
            })?;
    }
    Ok(())
}

fn release_uniques(tx: &Connection, t: &str, collection: &str, id: RecordId) -> StoreResult<()> {
    tx.prepare_cached(
        "DELETE FROM record_uniques WHERE tenant_id = ?1 AND collection = ?2 AND record_id = ?3",
    )
    .map_err(direct_error)?
    .execute(params![t, collection, id.to_string()])
    .map_err(direct_error)?;
    Ok(())
}

/// A collection's unique fields as stored, if it is defined.
fn stored_collection(tx: &Connection, t: &str, name: &str) -> StoreResult<Option<Vec<String>>> {
    let text: Option<String> = tx
        .prepare_cached("SELECT unique_fields FROM collections WHERE tenant_id = ?1 AND name = ?2")
        .map_err(direct_error)?
        .query_row([t, name], |r| r.get(0))
        .optional()
        .map_err(direct_error)?;
    Ok(text.map(|t| serde_json::from_str(&t).unwrap_or_default()))
}

/// Creates or replaces a definition row (`created_at` of an existing one stays).
fn upsert_collection(tx: &Connection, t: &str, def: &CollectionDef) -> StoreResult<()> {
    tx.prepare_cached(
        "INSERT INTO collections (tenant_id, name, schema, unique_fields, indexed_fields, required_feature, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (tenant_id, name) DO UPDATE SET schema = excluded.schema, unique_fields = excluded.unique_fields,
            indexed_fields = excluded.indexed_fields, required_feature = excluded.required_feature,
            updated_at = excluded.updated_at",
    )
    .map_err(direct_error)?
    .execute(params![
        t,
        def.name,
        def.schema.as_ref().map(Value::to_string),
        serde_json::to_string(&def.unique).unwrap_or_default(),
        serde_json::to_string(&def.indexed).unwrap_or_default(),
        def.required_feature,
        time_text(def.created_at),
        time_text(def.updated_at),
    ])
    .map_err(direct_error)?;
    Ok(())
}

/// Claims every record's values of the collection's unique fields anew
/// (`take_over`: as a restore claims, see `claim`). Reads the collection's
/// records in pages: a large collection is never held in memory whole.
fn rebuild_claims(
    tx: &Connection,
    t: &str,
    def: &CollectionDef,
    take_over: bool,
) -> StoreResult<()> {
    tx.execute(
        "DELETE FROM record_uniques WHERE tenant_id = ?1 AND collection = ?2",
        [t, def.name.as_str()],
    )
    .map_err(direct_error)?;
    if def.unique.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "SELECT {RECORD_COLUMNS} FROM records WHERE tenant_id = ?1 AND collection = ?2 AND id > ?3
         ORDER BY id LIMIT 1000"
    );
    let mut after = String::new();
    loop {
        let rows = tx
            .prepare_cached(&sql)
            .map_err(direct_error)?
            .query_map(params![t, def.name, after], RecordRow::read)
            .map_err(direct_error)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(direct_error)?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = last.0.clone();
        for row in rows {
            claim(tx, t, &def.name, &def.unique, &row.record()?, take_over)?;
        }
    }
}

/// The stored version and data length (bytes, as the quota counts them:
/// `length` of text counts characters) of a record.
fn stored(
    tx: &Connection,
    t: &str,
    collection: &str,
    id: RecordId,
) -> StoreResult<Option<(i64, i64)>> {
    tx.prepare_cached(
        "SELECT version, length(CAST(data AS BLOB)) FROM records WHERE tenant_id = ?1 AND collection = ?2 AND id = ?3",
    )
    .map_err(direct_error)?
    .query_row(params![t, collection, id.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))
    .optional()
    .map_err(direct_error)
}

impl SqliteTenantData {
    fn chain(&self) -> ChainAt {
        ChainAt::tenant(AuditChain::Data, self.tenant_id)
    }

    /// Index DDL for the definitions' indexed fields, outside any write
    /// transaction (IF NOT EXISTS makes it idempotent).
    async fn ensure_indexes(&self, defs: &[CollectionDef]) -> StoreResult<()> {
        for field in defs.iter().flat_map(|d| &d.indexed) {
            let sql = format!(
                "CREATE INDEX IF NOT EXISTS {} ON records (tenant_id, collection, {}, id)",
                index_name(field),
                sort_sql(&SortKey::Field(field.clone()))
            );
            self.db.execute_batch(&sql).await?;
        }
        Ok(())
    }

    async fn set_sealed(&self, sealed: bool) -> StoreResult<()> {
        let t = self.tenant.as_str();
        self.db
            .write(|tx| {
                tx.execute(
                    "INSERT INTO usage (tenant_id, sealed) VALUES (?1, ?2)
                     ON CONFLICT (tenant_id) DO UPDATE SET sealed = excluded.sealed",
                    params![t, sealed],
                )
                .map_err(direct_error)?;
                Ok(())
            })
            .await
    }
}

/// `Restore`'s records and removals, on the open transaction.
fn restore_records(tx: &Connection, t: &str, restore: &Restore) -> StoreResult<()> {
    // Claims follow the unique fields as stored now (the restore's own
    // definitions were written first).
    let mut unique_fields: std::collections::HashMap<&str, Vec<String>> = Default::default();
    for (collection, id) in &restore.removed {
        if let Some((_, len)) = stored(tx, t, collection, *id)? {
            tx.prepare_cached(
                "DELETE FROM records WHERE tenant_id = ?1 AND collection = ?2 AND id = ?3",
            )
            .map_err(direct_error)?
            .execute(params![t, collection, id.to_string()])
            .map_err(direct_error)?;
            release_uniques(tx, t, collection, *id)?;
            add_usage(tx, t, -1, -len)?;
        }
    }
    for (collection, r) in &restore.records {
        let data = r.data.to_string();
        let old = stored(tx, t, collection, r.id)?;
        tx.prepare_cached(
            "INSERT INTO records (tenant_id, collection, id, data, version, created_at, updated_at, created_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (tenant_id, collection, id) DO UPDATE SET data = excluded.data,
                version = excluded.version, created_at = excluded.created_at,
                updated_at = excluded.updated_at, created_by = excluded.created_by",
        )
        .map_err(direct_error)?
        .execute(params![
            t,
            collection,
            r.id.to_string(),
            data,
            r.version,
            time_text(r.created_at),
            time_text(r.updated_at),
            r.created_by.map(|u| u.to_string()),
        ])
        .map_err(direct_error)?;
        release_uniques(tx, t, collection, r.id)?;
        if !unique_fields.contains_key(collection.as_str()) {
            let fields = stored_collection(tx, t, collection)?.unwrap_or_default();
            unique_fields.insert(collection, fields);
        }
        let fields = unique_fields
            .get(collection.as_str())
            .map_or(&[][..], Vec::as_slice);
        claim(tx, t, collection, fields, r, true)?;
        let (added, old_len) = old.map_or((1, 0), |(_, len)| (0, len));
        add_usage(tx, t, added, data.len() as i64 - old_len)?;
    }
    Ok(())
}

#[async_trait]
impl TenantData for SqliteTenantData {
    async fn collections_after(&self, after: &str, limit: u32) -> StoreResult<Vec<CollectionDef>> {
        // BINARY collation: the same byte order as PostgreSQL's "C".
        let sql = format!(
            "SELECT {COLLECTION_COLUMNS} FROM collections
             WHERE tenant_id = ?1 AND name > ?2 ORDER BY name LIMIT ?3"
        );
        let rows = self
            .db
            .readers
            .read(|c| {
                let mut statement = c.prepare_cached(&sql).map_err(direct_error)?;
                let rows = statement
                    .query_map(
                        rusqlite::params![self.tenant.as_str(), after, limit],
                        read_collection,
                    )
                    .map_err(direct_error)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(direct_error)
            })
            .await?;
        rows.into_iter().map(collection_def).collect()
    }

    async fn collection(&self, name: &str) -> StoreResult<Option<CollectionDef>> {
        let sql = format!(
            "SELECT {COLLECTION_COLUMNS} FROM collections WHERE tenant_id = ?1 AND name = ?2"
        );
        let row = self
            .db
            .readers
            .read(|c| {
                c.prepare_cached(&sql)
                    .map_err(direct_error)?
                    .query_row([self.tenant.as_str(), name], read_collection)
                    .optional()
                    .map_err(direct_error)
            })
            .await?;
        row.map(collection_def).transpose()
    }

    async fn put_collection(&self, def: &CollectionDef, a: &NewAuditEntry) -> StoreResult<bool> {
        self.ensure_indexes(std::slice::from_ref(def)).await?;
        let t = self.tenant.as_str();
        let chain = self.chain();
        self.db
            .write_long(|tx| {
                writable(tx, t)?;
                let existed = stored_collection(tx, t, &def.name)?.is_some();
                upsert_collection(tx, t, def)?;
                // Rebuild the unique claims for the (possibly new) unique fields.
                rebuild_claims(tx, t, def, false)?;
                audit::append_direct(tx, &chain, a)?;
                Ok(!existed)
            })
            .await
    }

    async fn create_collection_if_absent(
        &self,
        def: &CollectionDef,
        a: &NewAuditEntry,
    ) -> StoreResult<()> {
        let chain = self.chain();
        let t = self.tenant.as_str();
        self.db
            .write(|tx| {
                writable(tx, t)?;
                let created = tx
                    .execute(
                        "INSERT INTO collections (tenant_id, name, schema, unique_fields, indexed_fields, required_feature, created_at, updated_at)
                         VALUES (?1, ?2, NULL, '[]', '[]', NULL, ?3, ?4) ON CONFLICT (tenant_id, name) DO NOTHING",
                        params![
                            t,
                            def.name,
                            time_text(def.created_at),
                            time_text(def.updated_at)
                        ],
                    )
                    .map_err(direct_error)?;
                if created > 0 {
                    audit::append_direct(tx, &chain, a)?;
                }
                Ok(())
            })
            .await
    }

    async fn insert_record(
        &self,
        def: &CollectionDef,
        r: &Record,
        max_storage: Option<u64>,
        a: &NewAuditEntry,
    ) -> StoreResult<()> {
        let data = r.data.to_string();
        let t = self.tenant.as_str();
        let chain = self.chain();
        self.db
            .write(|tx| {
                check_quota(writable(tx, t)?, data.len() as i64, max_storage)?;
                tx.prepare_cached(
                    "INSERT INTO records (tenant_id, collection, id, data, version, created_at, updated_at, created_by)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(direct_error)?
                .execute(params![
                    t,
                    def.name,
                    r.id.to_string(),
                    data,
                    r.version,
                    time_text(r.created_at),
                    time_text(r.updated_at),
                    r.created_by.map(|u| u.to_string()),
                ])
                .map_err(direct_error)?;
                let unique = stored_unique(tx, t, &def.name)?;
                claim_uniques(tx, t, &def.name, &unique, r)?;
                add_usage(tx, t, 1, data.len() as i64)?;
                audit::append_direct(tx, &chain, a)?;
                Ok(())
            })
            .await
    }

    async fn record(&self, collection: &str, id: RecordId) -> StoreResult<Option<Record>> {
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM records WHERE tenant_id = ?1 AND collection = ?2 AND id = ?3"
        );
        let row = self
            .db
            .readers
            .read(|conn| {
                conn.prepare_cached(&sql)
                    .map_err(direct_error)?
                    .query_row(
                        params![self.tenant, collection, id.to_string()],
                        RecordRow::read,
                    )
                    .optional()
                    .map_err(direct_error)
            })
            .await?;
        row.map(RecordRow::record).transpose()
    }

    async fn list_records(
        &self,
        def: &CollectionDef,
        query: &RecordQuery,
    ) -> StoreResult<Vec<Record>> {
        let mut q = Sql::default();
        q.push(&format!(
            "SELECT {RECORD_COLUMNS} FROM records WHERE tenant_id = "
        ))
        .bind(self.tenant.clone())
        .push(" AND collection = ")
        .bind(def.name.clone());
        for f in &query.filters {
            let path = json_path(&f.field);
            q.push(" AND ");
            match f.op {
                FilterOp::Eq => q.compare(&path, "=", &f.operands[0]),
                FilterOp::Ne => q.push("NOT ").compare(&path, "=", &f.operands[0]),
                FilterOp::Gte => q.compare(&path, ">=", &f.operands[0]),
                FilterOp::Lte => q.compare(&path, "<=", &f.operands[0]),
                FilterOp::In => {
                    q.push("(0");
                    for op in &f.operands {
                        q.push(" OR ").compare(&path, "=", op);
                    }
                    q.push(")")
                }
            };
        }
        let key = sort_sql(&query.sort);
        let (cmp, dir) = if query.descending {
            ("<", "DESC")
        } else {
            (">", "ASC")
        };
        if let Some(after) = &query.after {
            q.push(&format!(" AND ({key}, id) {cmp} ("))
                .bind_key(&after.key)
                .push(", ")
                .bind(after.id.to_string())
                .push(")");
        }
        q.push(&format!(" ORDER BY {key} {dir}, id {dir} LIMIT "))
            .bind(i64::from(query.limit.max(1)));
        let run = |conn: &Connection| {
            let mut statement = conn.prepare_cached(&q.text).map_err(direct_error)?;
            let rows = statement
                .query_map(rusqlite::params_from_iter(&q.params), RecordRow::read)
                .map_err(direct_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(direct_error)
        };
        // A filter or sort on a field without an index scans the tenant's
        // whole collection: long work. An indexed page is a point read.
        let unindexed = |field: &String| !def.indexed.contains(field);
        let scans = query.filters.iter().any(|f| unindexed(&f.field))
            || matches!(&query.sort, SortKey::Field(f) if unindexed(f));
        let readers = &self.db.readers;
        let rows: Vec<RecordRow> = if scans {
            readers.read_long(run).await?
        } else {
            readers.read(run).await?
        };
        rows.into_iter().map(RecordRow::record).collect()
    }

    async fn update_record(
        &self,
        def: &CollectionDef,
        r: &Record,
        expected: i64,
        max_storage: Option<u64>,
        a: &NewAuditEntry,
    ) -> StoreResult<()> {
        let data = r.data.to_string();
        let t = self.tenant.as_str();
        let chain = self.chain();
        self.db
            .write(|tx| {
                let current = writable(tx, t)?;
                let (version, old_len) =
                    stored(tx, t, &def.name, r.id)?.ok_or(StoreError::NotFound)?;
                if version != expected {
                    return Err(StoreError::VersionMismatch);
                }
                let delta = data.len() as i64 - old_len;
                check_quota(current, delta, max_storage)?;
                tx.prepare_cached(
                    "UPDATE records SET data = ?1, version = ?2, updated_at = ?3
                     WHERE tenant_id = ?4 AND collection = ?5 AND id = ?6",
                )
                .map_err(direct_error)?
                .execute(params![
                    data,
                    r.version,
                    time_text(r.updated_at),
                    t,
                    def.name,
                    r.id.to_string()
                ])
                .map_err(direct_error)?;
                release_uniques(tx, t, &def.name, r.id)?;
                let unique = stored_unique(tx, t, &def.name)?;
                claim_uniques(tx, t, &def.name, &unique, r)?;
                add_usage(tx, t, 0, delta)?;
                audit::append_direct(tx, &chain, a)?;
                Ok(())
            })
            .await
    }

    async fn delete_record(
        &self,
        def: &CollectionDef,
        id: RecordId,
        expected: Option<i64>,
        a: &NewAuditEntry,
    ) -> StoreResult<()> {
        let t = self.tenant.as_str();
        let chain = self.chain();
        self.db
            .write(|tx| {
                writable(tx, t)?;
                let (version, len) = stored(tx, t, &def.name, id)?.ok_or(StoreError::NotFound)?;
                if expected.is_some_and(|e| e != version) {
                    return Err(StoreError::VersionMismatch);
                }
                tx.prepare_cached(
                    "DELETE FROM records WHERE tenant_id = ?1 AND collection = ?2 AND id = ?3",
                )
                .map_err(direct_error)?
                .execute(params![t, def.name, id.to_string()])
                .map_err(direct_error)?;
                release_uniques(tx, t, &def.name, id)?;
                add_usage(tx, t, -1, -len)?;
                audit::append_direct(tx, &chain, a)?;
                Ok(())
            })
            .await
    }

    async fn group_counts(
        &self,
        collection: &str,
        field: &str,
        max_groups: u32,
    ) -> StoreResult<GroupCounts> {
        // The total is summed over every group before the limit.
        let rows: Vec<(Option<String>, i64, i64)> = self.db.readers.read_long(|c| {
            let mut statement = c
                .prepare_cached(
                    "SELECT k, n, sum(n) OVER () FROM (
                         SELECT CASE WHEN json_type(data, ?1) IS NULL THEN NULL
                                     WHEN json_type(data, ?1) IN ('object', 'array') THEN json_extract(data, ?1)
                                     ELSE json_quote(json_extract(data, ?1)) END AS k, count(*) AS n
                         FROM records WHERE tenant_id = ?2 AND collection = ?3 GROUP BY k)
                     ORDER BY n DESC, k LIMIT ?4",
                )
                .map_err(direct_error)?;
            let rows = statement
                .query_map(
                    params![json_path(field), self.tenant, collection, i64::from(max_groups) + 1],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .map_err(direct_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(direct_error)
        }).await?;
        Ok(crate::store::data::group_counts_from(rows, max_groups))
    }

    async fn usage(&self) -> StoreResult<Usage> {
        let row: Option<(i64, i64)> = self
            .db
            .readers
            .read(|c| {
                c.prepare_cached("SELECT records, storage_bytes FROM usage WHERE tenant_id = ?1")
                    .map_err(direct_error)?
                    .query_row([&self.tenant], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
                    .map_err(direct_error)
            })
            .await?;
        let (records, storage_bytes) = row.unwrap_or((0, 0));
        Ok(Usage {
            records: records.max(0) as u64,
            storage_bytes: storage_bytes.max(0) as u64,
        })
    }

    async fn list_audit(
        &self,
        filter: &AuditFilter,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<(i64, AuditEntry)>> {
        let chain = self.chain();
        self.db
            .readers
            .read(|c| audit::list_direct(c, &chain, filter, after_seq, limit))
            .await
    }

    async fn audit_head(&self) -> StoreResult<Option<(i64, String)>> {
        let chain = self.chain();
        self.db
            .readers
            .read(|c| audit::head_direct(c, &chain))
            .await
    }

    async fn last_record_id(&self, collection: &str) -> StoreResult<Option<RecordId>> {
        let id: Option<String> = self
            .db
            .readers
            .read(|c| {
                c.prepare_cached(
                    "SELECT id FROM records WHERE tenant_id = ?1 AND collection = ?2
                     ORDER BY id DESC LIMIT 1",
                )
                .and_then(|mut st| {
                    st.query_row(params![self.tenant, collection], |r| r.get(0))
                        .optional()
                })
                .map_err(direct_error)
            })
            .await?;
        id.map(|id| {
            id.parse()
                .map(RecordId)
                .map_err(|e| StoreError::Internal(format!("stored record id {id:?}: {e}")))
        })
        .transpose()
    }

    async fn scan_records(
        &self,
        after: Option<&(String, RecordId)>,
        limit: u32,
    ) -> StoreResult<Vec<(String, Record)>> {
        let (collection, id) = after.map_or((String::new(), String::new()), |(c, id)| {
            (c.clone(), id.to_string())
        });
        let sql = format!(
            "SELECT collection, {RECORD_COLUMNS} FROM records
             WHERE tenant_id = ?1 AND (collection, id) > (?2, ?3)
             ORDER BY collection, id LIMIT ?4"
        );
        let rows: Vec<(String, RecordRow)> = self
            .db
            .readers
            .read_long(|c| {
                let mut statement = c.prepare_cached(&sql).map_err(direct_error)?;
                let rows = statement
                    .query_map(
                        params![self.tenant, collection, id, i64::from(limit.max(1))],
                        |r| {
                            let (c, id, data, version, created_at, updated_at, created_by) =
                                r.try_into()?;
                            Ok((
                                c,
                                RecordRow(id, data, version, created_at, updated_at, created_by),
                            ))
                        },
                    )
                    .map_err(direct_error)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(direct_error)
            })
            .await?;
        rows.into_iter()
            .map(|(c, row)| Ok((c, row.record()?)))
            .collect()
    }

    async fn restore(&self, restore: &Restore) -> StoreResult<()> {
        if restore.is_empty() {
            return Ok(());
        }
        self.ensure_indexes(&restore.collections).await?;
        let t = self.tenant.as_str();
        let chain = self.chain();
        self.db
            .write_long(|tx| {
                tx.execute(
                    "INSERT INTO usage (tenant_id) VALUES (?1) ON CONFLICT (tenant_id) DO NOTHING",
                    [t],
                )
                .map_err(direct_error)?;
                for def in &restore.collections {
                    let before = stored_collection(tx, t, &def.name)?;
                    upsert_collection(tx, t, def)?;
                    if before.as_ref() != Some(&def.unique) {
                        rebuild_claims(tx, t, def, true)?;
                    }
                }
                restore_records(tx, t, restore)?;
                for (seq, entry) in &restore.audit {
                    audit::insert_direct(tx, &chain, *seq, entry)?;
                }
                for (entry, at) in &restore.relink {
                    audit::append_direct_at(tx, &chain, entry, *at)?;
                }
                if let Some(entry) = &restore.append {
                    audit::append_direct(tx, &chain, entry)?;
                }
                Ok(())
            })
            .await
    }

    async fn seal(&self) -> StoreResult<()> {
        self.set_sealed(true).await
    }

    async fn unseal(&self) -> StoreResult<()> {
        self.set_sealed(false).await
    }

    async fn clear(&self) -> StoreResult<()> {
        let t = self.tenant.as_str();
        self.db
            .write_long(|tx| {
                for table in ["record_uniques", "records", "collections"] {
                    tx.execute(&format!("DELETE FROM {table} WHERE tenant_id = ?1"), [t])
                        .map_err(direct_error)?;
                }
                tx.execute(
                    "UPDATE usage SET records = 0, storage_bytes = 0 WHERE tenant_id = ?1",
                    [t],
                )
                .map_err(direct_error)?;
                Ok(())
            })
            .await
    }
}

/// The SQL of a sort key. Field names come from the collection's stored
/// definition (validated when it was defined), never from the request, and
/// match the expression of the index created for them.
fn sort_sql(key: &SortKey) -> String {
    match key {
        SortKey::CreatedAt => "created_at".to_owned(),
        SortKey::UpdatedAt => "updated_at".to_owned(),
        SortKey::Field(f) => format!("coalesce(json_extract(data, '{}'), '')", json_path(f)),
    }
}

fn index_name(field: &str) -> String {
    format!("records_f_{}", field.replace('.', "__"))
}

/// The columns `RecordRow` reads, in its order.
const RECORD_COLUMNS: &str = "id, data, version, created_at, updated_at, created_by";

/// A record as the in-place reader fetches it (decoded outside the lock).
struct RecordRow(String, String, i64, String, String, Option<String>);

impl RecordRow {
    fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        let (id, data, version, created_at, updated_at, created_by) = r.try_into()?;
        Ok(Self(id, data, version, created_at, updated_at, created_by))
    }

    fn record(self) -> StoreResult<Record> {
        let RecordRow(id, data, version, created_at, updated_at, created_by) = self;
        Ok(Record {
            id: id
                .parse()
                .map_err(|_| StoreError::Internal(format!("bad record id {id:?}")))?,
            data: serde_json::from_str(&data)
                .map_err(|e| StoreError::Internal(format!("bad json in data: {e}")))?,
            version,
            created_at: parse_time(&created_at)?,
            updated_at: parse_time(&updated_at)?,
            created_by: created_by.and_then(|c| c.parse().ok()),
        })
    }
}

/// SQL with `?` placeholders and the values bound to them, built together
/// so a value never lands in the SQL text.
#[derive(Default)]
struct Sql {
    text: String,
    params: Vec<rusqlite::types::Value>,
}

impl Sql {
    fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    fn bind(&mut self, value: impl Into<rusqlite::types::Value>) -> &mut Self {
        self.text.push('?');
        self.params.push(value.into());
        self
    }

    fn bind_operand(&mut self, op: &Operand) -> &mut Self {
        match op {
            Operand::Number(n) => self.bind(*n),
            Operand::Text(s) => self.bind(s.clone()),
        }
    }

    /// A sort key value of a cursor, as its column compares.
    fn bind_key(&mut self, key: &Value) -> &mut Self {
        match key {
            Value::Number(n) => self.bind(n.as_f64().unwrap_or(0.0)),
            Value::String(s) => self.bind(s.clone()),
            other => self.bind(other.to_string()),
        }
    }

    /// A typed comparison of a JSON field: numbers compare with numbers,
    /// text with text, and a field of another type never matches.
    fn compare(&mut self, path: &str, cmp: &str, op: &Operand) -> &mut Self {
        let types = match op {
            Operand::Number(_) => "('integer', 'real')",
            Operand::Text(_) => "('text')",
        };
        self.push("coalesce(json_type(data, ")
            .bind(path.to_owned())
            .push(") IN ")
            .push(types)
            .push(" AND json_extract(data, ")
            .bind(path.to_owned())
            .push(") ")
            .push(cmp)
            .push(" ")
            .bind_operand(op)
            .push(", 0)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::{Slug, TenantStatus};
    use chrono::Utc;

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
