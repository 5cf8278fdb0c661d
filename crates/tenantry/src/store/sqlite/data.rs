//! The data plane on SQLite: shared tier in `shared.db`, dedicated tier in
//! `tenants/<id>.db`, both with the same schema. Dedicated databases open
//! lazily and are closed when idle or evicted (bounded, least recently used).

use super::audit::{self, ChainAt};
use super::reader::Readers;
use super::{begin_write, db_error};
use crate::audit::{AuditChain, AuditEntry, AuditFilter, NewAuditEntry};
use crate::ids::{RecordId, TenantId};
use crate::record::{CollectionDef, FilterOp, Operand, Record, RecordQuery, SortKey, json_path};
use crate::store::data::{DataPlane, TenantData, Usage};
use crate::store::migrate::{MigratePolicy, latest_version, must_run};
use crate::store::{StoreError, StoreResult, check_quota, parse_time, strings, time_text};
use crate::{Isolation, Tenant};
use async_trait::async_trait;
use moka::future::Cache;
use rusqlite::OptionalExtension;
use serde_json::Value;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqliteConnection, SqlitePool};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/tenant/sqlite");

/// The tenant-data schema version of a migrated database.
pub(crate) fn tenant_schema_version() -> i64 {
    latest_version(&MIGRATIONS)
}

/// Opens a tenant database. Migrations run when it is created (and by the
/// migration command), not on every lazy re-open: with thousands of dedicated
/// tenants cycling through the open-database bound, that check would be paid
/// on a large share of requests.
async fn open_pool(path: &Path, create: bool, max_connections: u32) -> StoreResult<SqlitePool> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(create)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
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
    shared: LazyPool,
    /// One connection for the shared database's writes: writers queue here
    /// in order instead of in SQLite's busy handler, which sleeps and retries
    /// (tens of milliseconds of tail latency under concurrent writes).
    shared_writer: LazyPool,
    shared_readers: Arc<Readers>,
    dedicated: Cache<TenantId, Dedicated>,
}

/// A sqlx pool opened on first use: a dedicated database that is only read
/// (most are, most of the time) never starts sqlx's connection thread, so
/// re-opening one that the LRU let go costs a file open, not a thread.
#[derive(Clone)]
struct LazyPool {
    path: PathBuf,
    cell: Arc<tokio::sync::OnceCell<SqlitePool>>,
}

impl LazyPool {
    fn ready(path: &Path, pool: SqlitePool) -> Self {
        Self {
            path: path.to_owned(),
            cell: Arc::new(tokio::sync::OnceCell::new_with(Some(pool))),
        }
    }

    fn lazy(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            cell: Arc::new(tokio::sync::OnceCell::new()),
        }
    }

    async fn get(&self) -> StoreResult<&SqlitePool> {
        self.cell
            .get_or_try_init(|| open_pool(&self.path, false, 1))
            .await
    }

    async fn close(&self) {
        if let Some(pool) = self.cell.get() {
            pool.close().await;
        }
    }
}

/// An open dedicated database: its (lazy) sqlx connection for writes and
/// the rarer reads, and its in-place point reader.
#[derive(Clone)]
struct Dedicated {
    pool: LazyPool,
    readers: Arc<Readers>,
}

impl Dedicated {
    /// A new database is created (and migrated) through sqlx at once; an
    /// existing one is opened for reading only until something writes.
    async fn open(path: &Path, create: bool) -> StoreResult<Self> {
        let pool = if create {
            LazyPool::ready(path, open_pool(path, true, 1).await?)
        } else {
            LazyPool::lazy(path)
        };
        Ok(Self {
            pool,
            readers: Arc::new(Readers::open(path, 1)?),
        })
    }
}

impl SqliteDataPlane {
    /// `max_open` bounds how many dedicated databases are open at once;
    /// `policy` says whether the shared database may be migrated.
    pub async fn open(data_dir: &Path, max_open: u64, policy: MigratePolicy) -> StoreResult<Self> {
        let dir = data_dir.join("tenants");
        std::fs::create_dir_all(&dir)
            .map_err(|e| StoreError::Internal(format!("creating {}: {e}", dir.display())))?;
        let shared = open_pool(&data_dir.join("shared.db"), true, 8).await?;
        migrate(&shared, policy, "the shared tenant database").await?;
        let path = data_dir.join("shared.db");
        Ok(Self {
            shared_readers: Arc::new(Readers::open(&path, 4)?),
            shared: LazyPool::ready(&path, shared),
            shared_writer: LazyPool::ready(&path, open_pool(&path, false, 1).await?),
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

    async fn dedicated(&self, tenant: TenantId) -> StoreResult<Dedicated> {
        let path = self.path(tenant);
        self.dedicated
            .try_get_with(tenant, async move {
                if !path.exists() {
                    return Err(StoreError::Internal(format!(
                        "tenant database {} is missing",
                        path.display()
                    )));
                }
                Dedicated::open(&path, false).await
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
        if tenant.isolation == Isolation::Dedicated {
            let db = Dedicated::open(&self.path(tenant.id), true).await?;
            migrate(
                db.pool.get().await?,
                MigratePolicy::Apply,
                "a new tenant database",
            )
            .await?;
            self.dedicated.insert(tenant.id, db).await;
        }
        Ok(())
    }

    fn schema_version(&self) -> i64 {
        tenant_schema_version()
    }

    async fn migrate_tenant(&self, tenant: &Tenant) -> StoreResult<()> {
        if tenant.isolation == Isolation::Dedicated {
            let what = format!("tenant {}'s database", tenant.slug);
            migrate(
                self.dedicated(tenant.id).await?.pool.get().await?,
                MigratePolicy::Apply,
                &what,
            )
            .await?;
        }
        Ok(())
    }

    async fn handle(&self, tenant: &Tenant) -> StoreResult<Arc<dyn TenantData>> {
        // A dedicated database has a single connection: reads and writes share it.
        let (pool, writer, readers) = match tenant.isolation {
            Isolation::Shared => (
                self.shared.clone(),
                self.shared_writer.clone(),
                self.shared_readers.clone(),
            ),
            Isolation::Dedicated => {
                let db = self.dedicated(tenant.id).await?;
                (db.pool.clone(), db.pool, db.readers)
            }
        };
        Ok(Arc::new(SqliteTenantData {
            pool,
            writer,
            readers,
            tenant: tenant.id.to_string(),
            tenant_id: tenant.id,
        }))
    }

    async fn purge(&self, tenant: &Tenant) -> StoreResult<()> {
        match tenant.isolation {
            Isolation::Shared => {
                let mut tx = begin_write(self.shared.get().await?).await?;
                for table in ["record_uniques", "records", "collections", "usage"] {
                    sqlx::query(&format!("DELETE FROM {table} WHERE tenant_id = ?"))
                        .bind(tenant.id.to_string())
                        .execute(&mut *tx)
                        .await
                        .map_err(db_error)?;
                }
                tx.commit().await.map_err(db_error)
            }
            Isolation::Dedicated => {
                if let Some(db) = self.dedicated.remove(&tenant.id).await {
                    db.pool.close().await;
                }
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
    pool: LazyPool,
    writer: LazyPool,
    readers: Arc<Readers>,
    tenant: String,
    tenant_id: TenantId,
}

impl SqliteTenantData {
    fn chain(&self) -> ChainAt {
        ChainAt::tenant(AuditChain::Data, self.tenant_id)
    }
}

fn json_text(row: &SqliteRow, col: &str) -> StoreResult<Value> {
    let text: String = row.try_get(col).map_err(db_error)?;
    serde_json::from_str(&text).map_err(|e| StoreError::Internal(format!("bad json in {col}: {e}")))
}

fn collection_from_row(row: &SqliteRow) -> StoreResult<CollectionDef> {
    let schema: Option<String> = row.try_get("schema").map_err(db_error)?;
    Ok(CollectionDef {
        name: row.try_get("name").map_err(db_error)?,
        schema: schema
            .map(|s| serde_json::from_str(&s))
            .transpose()
            .map_err(|e| StoreError::Internal(format!("bad schema: {e}")))?,
        unique: strings(json_text(row, "unique_fields")?),
        indexed: strings(json_text(row, "indexed_fields")?),
        required_feature: row.try_get("required_feature").map_err(db_error)?,
        created_at: parse_time(&row.try_get::<String, _>("created_at").map_err(db_error)?)?,
        updated_at: parse_time(&row.try_get::<String, _>("updated_at").map_err(db_error)?)?,
    })
}

fn record_from_row(row: &SqliteRow) -> StoreResult<Record> {
    let id: String = row.try_get("id").map_err(db_error)?;
    let created_by: Option<String> = row.try_get("created_by").map_err(db_error)?;
    Ok(Record {
        id: id
            .parse()
            .map_err(|_| StoreError::Internal(format!("bad record id {id:?}")))?,
        data: json_text(row, "data")?,
        version: row.try_get("version").map_err(db_error)?,
        created_at: parse_time(&row.try_get::<String, _>("created_at").map_err(db_error)?)?,
        updated_at: parse_time(&row.try_get::<String, _>("updated_at").map_err(db_error)?)?,
        created_by: created_by.and_then(|c| c.parse().ok()),
    })
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
        Ok(Self(
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
        ))
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

impl SqliteTenantData {
    async fn current_storage(&self, conn: &mut SqliteConnection) -> StoreResult<u64> {
        let n: Option<i64> =
            sqlx::query_scalar("SELECT storage_bytes FROM usage WHERE tenant_id = ?")
                .bind(&self.tenant)
                .fetch_optional(&mut *conn)
                .await
                .map_err(db_error)?;
        Ok(n.unwrap_or(0).max(0) as u64)
    }

    async fn add_usage(
        &self,
        conn: &mut SqliteConnection,
        records: i64,
        bytes: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO usage (tenant_id, records, storage_bytes) VALUES (?, ?, ?)
             ON CONFLICT (tenant_id) DO UPDATE
             SET records = records + excluded.records, storage_bytes = storage_bytes + excluded.storage_bytes",
        )
        .bind(&self.tenant)
        .bind(records)
        .bind(bytes)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// The unique fields as stored now. Writes claim these rather than those
    /// of the caller's definition, which may come from a cache that has not
    /// yet seen another instance add a unique field.
    async fn stored_unique(
        &self,
        conn: &mut SqliteConnection,
        collection: &str,
    ) -> StoreResult<Vec<String>> {
        let text: Option<String> = sqlx::query_scalar(
            "SELECT unique_fields FROM collections WHERE tenant_id = ? AND name = ?",
        )
        .bind(&self.tenant)
        .bind(collection)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error)?;
        Ok(text
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default())
    }

    /// Claims the record's values of `fields`; a taken one is `Conflict(field)`.
    async fn claim_uniques(
        &self,
        conn: &mut SqliteConnection,
        collection: &str,
        fields: &[String],
        record: &Record,
    ) -> StoreResult<()> {
        for field in fields {
            let Some(value) =
                crate::record::field_value(&record.data, field).filter(|v| !v.is_null())
            else {
                continue;
            };
            sqlx::query(
                "INSERT INTO record_uniques (tenant_id, collection, field, value, record_id) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(&self.tenant)
            .bind(collection)
            .bind(field)
            .bind(value.to_string())
            .bind(record.id.to_string())
            .execute(&mut *conn)
            .await
            .map_err(|e| match db_error(e) {
                StoreError::Conflict(_) => StoreError::Conflict(field.clone()),
                other => other,
            })?;
        }
        Ok(())
    }

    async fn release_uniques(
        &self,
        conn: &mut SqliteConnection,
        collection: &str,
        id: RecordId,
    ) -> StoreResult<()> {
        sqlx::query(
            "DELETE FROM record_uniques WHERE tenant_id = ? AND collection = ? AND record_id = ?",
        )
        .bind(&self.tenant)
        .bind(collection)
        .bind(id.to_string())
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn stored(
        &self,
        conn: &mut SqliteConnection,
        collection: &str,
        id: RecordId,
    ) -> StoreResult<Option<(i64, i64)>> {
        sqlx::query_as("SELECT version, length(data) FROM records WHERE tenant_id = ? AND collection = ? AND id = ?")
            .bind(&self.tenant)
            .bind(collection)
            .bind(id.to_string())
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error)
    }
}

#[async_trait]
impl TenantData for SqliteTenantData {
    async fn collections(&self) -> StoreResult<Vec<CollectionDef>> {
        sqlx::query("SELECT * FROM collections WHERE tenant_id = ? ORDER BY name")
            .bind(&self.tenant)
            .fetch_all(self.pool.get().await?)
            .await
            .map_err(db_error)?
            .iter()
            .map(collection_from_row)
            .collect()
    }

    async fn collection(&self, name: &str) -> StoreResult<Option<CollectionDef>> {
        sqlx::query("SELECT * FROM collections WHERE tenant_id = ? AND name = ?")
            .bind(&self.tenant)
            .bind(name)
            .fetch_optional(self.pool.get().await?)
            .await
            .map_err(db_error)?
            .as_ref()
            .map(collection_from_row)
            .transpose()
    }

    async fn put_collection(&self, def: &CollectionDef, a: &NewAuditEntry) -> StoreResult<bool> {
        // Index DDL first (outside the write transaction; IF NOT EXISTS makes it idempotent).
        for field in &def.indexed {
            let sql = format!(
                "CREATE INDEX IF NOT EXISTS {} ON records (tenant_id, collection, {}, id)",
                index_name(field),
                sort_sql(&SortKey::Field(field.clone()))
            );
            sqlx::query(&sql)
                .execute(self.writer.get().await?)
                .await
                .map_err(db_error)?;
        }
        let mut tx = begin_write(self.writer.get().await?).await?;
        let existed: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM collections WHERE tenant_id = ? AND name = ?")
                .bind(&self.tenant)
                .bind(&def.name)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
        // Rebuild the unique claims for the (possibly new) unique fields.
        sqlx::query("DELETE FROM record_uniques WHERE tenant_id = ? AND collection = ?")
            .bind(&self.tenant)
            .bind(&def.name)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        if !def.unique.is_empty() {
            let rows = sqlx::query("SELECT * FROM records WHERE tenant_id = ? AND collection = ?")
                .bind(&self.tenant)
                .bind(&def.name)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error)?;
            for row in &rows {
                self.claim_uniques(&mut tx, &def.name, &def.unique, &record_from_row(row)?)
                    .await?;
            }
        }
        sqlx::query(
            "INSERT INTO collections (tenant_id, name, schema, unique_fields, indexed_fields, required_feature, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (tenant_id, name) DO UPDATE SET schema = excluded.schema, unique_fields = excluded.unique_fields,
                indexed_fields = excluded.indexed_fields, required_feature = excluded.required_feature,
                updated_at = excluded.updated_at",
        )
        .bind(&self.tenant)
        .bind(&def.name)
        .bind(def.schema.as_ref().map(Value::to_string))
        .bind(serde_json::to_string(&def.unique).unwrap_or_default())
        .bind(serde_json::to_string(&def.indexed).unwrap_or_default())
        .bind(&def.required_feature)
        .bind(time_text(def.created_at))
        .bind(time_text(def.updated_at))
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        audit::append(&mut tx, &self.chain(), a).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(existed.is_none())
    }

    async fn create_collection_if_absent(
        &self,
        def: &CollectionDef,
        a: &NewAuditEntry,
    ) -> StoreResult<()> {
        let mut tx = begin_write(self.writer.get().await?).await?;
        let done = sqlx::query(
            "INSERT INTO collections (tenant_id, name, schema, unique_fields, indexed_fields, required_feature, created_at, updated_at)
             VALUES (?, ?, NULL, '[]', '[]', NULL, ?, ?) ON CONFLICT (tenant_id, name) DO NOTHING",
        )
        .bind(&self.tenant)
        .bind(&def.name)
        .bind(time_text(def.created_at))
        .bind(time_text(def.updated_at))
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        if done.rows_affected() > 0 {
            audit::append(&mut tx, &self.chain(), a).await?;
        }
        tx.commit().await.map_err(db_error)
    }

    async fn insert_record(
        &self,
        def: &CollectionDef,
        r: &Record,
        max_storage: Option<u64>,
        a: &NewAuditEntry,
    ) -> StoreResult<()> {
        let data = r.data.to_string();
        let mut tx = begin_write(self.writer.get().await?).await?;
        check_quota(
            self.current_storage(&mut tx).await?,
            data.len() as i64,
            max_storage,
        )?;
        sqlx::query(
            "INSERT INTO records (tenant_id, collection, id, data, version, created_at, updated_at, created_by)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&self.tenant)
        .bind(&def.name)
        .bind(r.id.to_string())
        .bind(&data)
        .bind(r.version)
        .bind(time_text(r.created_at))
        .bind(time_text(r.updated_at))
        .bind(r.created_by.map(|u| u.to_string()))
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let unique = self.stored_unique(&mut tx, &def.name).await?;
        self.claim_uniques(&mut tx, &def.name, &unique, r).await?;
        self.add_usage(&mut tx, 1, data.len() as i64).await?;
        audit::append(&mut tx, &self.chain(), a).await?;
        tx.commit().await.map_err(db_error)
    }

    async fn record(&self, collection: &str, id: RecordId) -> StoreResult<Option<Record>> {
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM records WHERE tenant_id = ?1 AND collection = ?2 AND id = ?3"
        );
        let row = self.readers.read(|conn| {
            conn.prepare_cached(&sql)?
                .query_row(
                    rusqlite::params![self.tenant, collection, id.to_string()],
                    RecordRow::read,
                )
                .optional()
        })?;
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
        let rows: Vec<RecordRow> = self.readers.read(|conn| {
            let mut statement = conn.prepare_cached(&q.text)?;
            let rows =
                statement.query_map(rusqlite::params_from_iter(&q.params), RecordRow::read)?;
            rows.collect()
        })?;
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
        let mut tx = begin_write(self.writer.get().await?).await?;
        let (version, old_len) = self
            .stored(&mut tx, &def.name, r.id)
            .await?
            .ok_or(StoreError::NotFound)?;
        if version != expected {
            return Err(StoreError::VersionMismatch);
        }
        let delta = data.len() as i64 - old_len;
        check_quota(self.current_storage(&mut tx).await?, delta, max_storage)?;
        sqlx::query(
            "UPDATE records SET data = ?, version = ?, updated_at = ? WHERE tenant_id = ? AND collection = ? AND id = ?",
        )
        .bind(&data)
        .bind(r.version)
        .bind(time_text(r.updated_at))
        .bind(&self.tenant)
        .bind(&def.name)
        .bind(r.id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        self.release_uniques(&mut tx, &def.name, r.id).await?;
        let unique = self.stored_unique(&mut tx, &def.name).await?;
        self.claim_uniques(&mut tx, &def.name, &unique, r).await?;
        self.add_usage(&mut tx, 0, delta).await?;
        audit::append(&mut tx, &self.chain(), a).await?;
        tx.commit().await.map_err(db_error)
    }

    async fn delete_record(
        &self,
        def: &CollectionDef,
        id: RecordId,
        expected: Option<i64>,
        a: &NewAuditEntry,
    ) -> StoreResult<()> {
        let mut tx = begin_write(self.writer.get().await?).await?;
        let (version, len) = self
            .stored(&mut tx, &def.name, id)
            .await?
            .ok_or(StoreError::NotFound)?;
        if expected.is_some_and(|e| e != version) {
            return Err(StoreError::VersionMismatch);
        }
        sqlx::query("DELETE FROM records WHERE tenant_id = ? AND collection = ? AND id = ?")
            .bind(&self.tenant)
            .bind(&def.name)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        self.release_uniques(&mut tx, &def.name, id).await?;
        self.add_usage(&mut tx, -1, -len).await?;
        audit::append(&mut tx, &self.chain(), a).await?;
        tx.commit().await.map_err(db_error)
    }

    async fn group_counts(
        &self,
        collection: &str,
        field: &str,
    ) -> StoreResult<(u64, Vec<(Value, u64)>)> {
        let rows: Vec<(Option<String>, i64)> = sqlx::query_as(
            "SELECT CASE WHEN json_type(data, ?1) IS NULL THEN NULL
                         WHEN json_type(data, ?1) IN ('object', 'array') THEN json_extract(data, ?1)
                         ELSE json_quote(json_extract(data, ?1)) END AS k, count(*)
             FROM records WHERE tenant_id = ?2 AND collection = ?3 GROUP BY k",
        )
        .bind(json_path(field))
        .bind(&self.tenant)
        .bind(collection)
        .fetch_all(self.pool.get().await?)
        .await
        .map_err(db_error)?;
        let total = rows.iter().map(|(_, n)| (*n).max(0) as u64).sum();
        let groups = rows
            .into_iter()
            .map(|(k, n)| {
                let key = k
                    .and_then(|k| serde_json::from_str(&k).ok())
                    .unwrap_or(Value::Null);
                (key, n.max(0) as u64)
            })
            .collect();
        Ok((total, groups))
    }

    async fn usage(&self) -> StoreResult<Usage> {
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT records, storage_bytes FROM usage WHERE tenant_id = ?")
                .bind(&self.tenant)
                .fetch_optional(self.pool.get().await?)
                .await
                .map_err(db_error)?;
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
        audit::list(
            self.pool.get().await?,
            &self.chain(),
            filter,
            after_seq,
            limit,
        )
        .await
    }
}
