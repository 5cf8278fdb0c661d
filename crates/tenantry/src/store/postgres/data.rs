//! The data plane on PostgreSQL: the shared tier in schema `tenant_data` of
//! the main database, the dedicated tier in one database per tenant, created
//! from a migrated template database. Every statement runs in a
//! [`tenant_tx`], so row-level security applies on top of the `tenant_id`
//! every query names.
//!
//! Dedicated tenants get a small runtime pool each, kept in a registry that
//! evicts idle pools and bounds the connections all of them may hold
//! together: each pool holds semaphore permits for all the connections it
//! may open, released only once its last user is gone and the pool closed.

use super::audit::{self, ChainAt};
use super::{
    DATA_SCHEMA, PgDatabase, check_identifier, drop_database, ensure_database, grant_runtime,
    migrate_tenant_schema, pg_error, runtime_options, runtime_pool, tenant_schema_version,
    tenant_tx,
};
use crate::audit::{AuditEntry, AuditFilter, NewAuditEntry};
use crate::ids::{RecordId, TenantId};
use crate::placement::Server;
use crate::record::{CollectionDef, FilterOp, Operand, Record, RecordQuery, SortKey};
use crate::store::data::{DataPlane, GroupCounts, Restore, TenantData, Usage, group_counts_from};
use crate::store::migrate::MigratePolicy;
use crate::store::{StoreError, StoreResult, check_quota, strings, time_text};
use crate::{Isolation, Tenant};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool, Postgres, QueryBuilder, Row};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

/// Connections of one dedicated tenant's pool (fewer if the cap is smaller).
const DEDICATED_POOL_CONNECTIONS: u32 = 1;
/// A dedicated pool unused this long is evicted.
const IDLE_TTL: Duration = Duration::from_secs(60);
/// How often idle pools are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// `{main}_tpl`, the main name cut so the whole fits PostgreSQL's 63 bytes.
fn template_name(main: &str) -> String {
    format!("{}_tpl", &main[..main.len().min(63 - 4)])
}

/// `{main}_{tenant hex}`, the main name cut so the whole fits 63 bytes.
fn tenant_db_name(main: &str, tenant: TenantId) -> String {
    let hex = tenant.0.simple().to_string();
    let keep = main.len().min(63 - 1 - hex.len());
    format!("{}_{hex}", &main[..keep])
}

/// The data plane across every configured server: the main database, and
/// the servers of `[[placement.servers]]` that tenants are placed on.
pub struct PgDataPlane {
    main: PgServer,
    placed: HashMap<String, PgServer>,
    placement: Vec<Server>,
}

impl PgDataPlane {
    /// Creates (or brings up to date) the template database of the dedicated
    /// tier on each server, and bounds the connections of all dedicated pools
    /// of a server together to `max_connections`. `placed` are the placement
    /// servers, already opened, in their configured order.
    pub async fn open(
        main: &PgDatabase,
        placed: Vec<(Server, PgDatabase)>,
        max_connections: u32,
    ) -> StoreResult<Self> {
        let mut servers = HashMap::new();
        let mut placement = Vec::new();
        for (server, db) in placed {
            let opened = PgServer::open(&db, max_connections, DEDICATED_POOL_CONNECTIONS).await?;
            servers.insert(server.name.clone(), opened);
            placement.push(server);
        }
        Ok(Self {
            main: PgServer::open(main, max_connections, DEDICATED_POOL_CONNECTIONS).await?,
            placed: servers,
            placement,
        })
    }

    /// The server holding the tenant's data.
    fn server(&self, tenant: &Tenant) -> StoreResult<&PgServer> {
        match &tenant.placement {
            None => Ok(&self.main),
            Some(name) => self.placed.get(name).ok_or_else(|| {
                StoreError::Internal(format!(
                    "tenant {} is placed on server {name:?}, which is not in [[placement.servers]]",
                    tenant.id
                ))
            }),
        }
    }

    /// How many dedicated pools are open now, on every server (evicted ones
    /// count until closed).
    pub async fn open_dedicated_pools(&self) -> u64 {
        std::iter::once(&self.main)
            .chain(self.placed.values())
            .map(|s| s.registry.open.load(Ordering::SeqCst))
            .sum()
    }
}

#[async_trait]
impl DataPlane for PgDataPlane {
    async fn provision(&self, tenant: &Tenant) -> StoreResult<()> {
        self.server(tenant)?.provision(tenant).await
    }

    async fn handle(&self, tenant: &Tenant) -> StoreResult<Arc<dyn TenantData>> {
        self.server(tenant)?.handle(tenant).await
    }

    async fn purge(&self, tenant: &Tenant) -> StoreResult<()> {
        self.server(tenant)?.purge(tenant).await
    }

    fn placement_servers(&self) -> &[Server] {
        &self.placement
    }

    fn schema_version(&self) -> i64 {
        tenant_schema_version()
    }

    async fn migrate_tenant(&self, tenant: &Tenant) -> StoreResult<()> {
        self.server(tenant)?.migrate_tenant(tenant).await
    }
}

/// Connects to database `name` of `db`'s server as the owner, brings its
/// tenant-data schema up to date and grants the runtime role. The connection
/// is closed whatever happened: nobody may stay connected to a template, or
/// `CREATE DATABASE … TEMPLATE` fails.
async fn migrate_tenant_database(db: &PgDatabase, name: &str, what: &str) -> StoreResult<()> {
    let mut conn = db
        .admin_options
        .clone()
        .database(name)
        .connect()
        .await
        .map_err(pg_error)?;
    // Sequential, without an inner async block: sqlx's futures are not
    // `Send` for every borrow lifetime, which `#[async_trait]` demands.
    let mut migrated = migrate_tenant_schema(&mut conn, MigratePolicy::Apply, what).await;
    if migrated.is_ok() {
        migrated = grant_runtime(&mut conn, &db.settings.runtime_role, false).await;
    }
    let closed = conn.close().await.map_err(pg_error);
    migrated.and(closed)
}

/// One server's share: its database (shared tier), the template of its
/// dedicated tenants' databases, and the registry of their pools.
struct PgServer {
    db: PgDatabase,
    template: String,
    registry: Arc<Registry>,
}

impl PgServer {
    async fn open(db: &PgDatabase, max_connections: u32, per_tenant: u32) -> StoreResult<Self> {
        let template = template_name(&db.name);
        check_identifier(&template)?;
        ensure_database(&db.admin_options, &template, None).await?;
        // The template is ours alone: always brought up to date.
        migrate_tenant_database(db, &template, "the template database").await?;

        let cap = max_connections.max(1);
        let registry = Arc::new(Registry {
            slots: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(cap as usize)),
            cap,
            per_pool: per_tenant.clamp(1, cap),
            open: Arc::new(AtomicU64::new(0)),
            epoch: Instant::now(),
            acquire_timeout: db.settings.acquire_timeout,
        });
        let weak = Arc::downgrade(&registry);
        tokio::spawn(sweep_idle(weak));
        Ok(Self {
            db: db.clone(),
            template,
            registry,
        })
    }

    fn db_name(&self, tenant: TenantId) -> String {
        tenant_db_name(&self.db.name, tenant)
    }

    async fn dedicated_entry(&self, tenant: TenantId) -> StoreResult<Arc<PoolEntry>> {
        let name = self.db_name(tenant);
        check_identifier(&name)?;
        let options = runtime_options(&self.db.admin_options, &self.db.settings, &name);
        let settings = self.db.settings.clone();
        self.registry
            .get(tenant, move |n| runtime_pool(options, n, &settings))
            .await
    }
}

/// The dedicated pools, by tenant.
struct Registry {
    slots: Mutex<HashMap<TenantId, Arc<Slot>>>,
    /// One permit per connection any pool entry may hold.
    permits: Arc<Semaphore>,
    cap: u32,
    per_pool: u32,
    /// Pool entries not yet closed.
    open: Arc<AtomicU64>,
    epoch: Instant,
    acquire_timeout: Duration,
}

struct Slot {
    entry: OnceCell<Arc<PoolEntry>>,
    /// Milliseconds since the registry's epoch.
    last_used: AtomicU64,
}

/// A tenant's pool and the permits for its connections. Handles hold the
/// entry, never the bare pool, so the permits come back only once the last
/// handle is gone and the pool's connections are closed.
struct PoolEntry {
    pool: PgPool,
    permit: Option<OwnedSemaphorePermit>,
    open: Arc<AtomicU64>,
}

impl Drop for PoolEntry {
    fn drop(&mut self) {
        let pool = self.pool.clone();
        let permit = self.permit.take();
        let open = self.open.clone();
        let close = async move {
            pool.close().await;
            drop(permit);
            open.fetch_sub(1, Ordering::SeqCst);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(close);
            }
            // No runtime left: dropping the pool drops its connections.
            Err(_) => {
                self.open.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

impl Registry {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    async fn get(
        &self,
        tenant: TenantId,
        make_pool: impl FnOnce(u32) -> PgPool,
    ) -> StoreResult<Arc<PoolEntry>> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            let slot = slots
                .entry(tenant)
                .or_insert_with(|| {
                    Arc::new(Slot {
                        entry: OnceCell::new(),
                        last_used: AtomicU64::new(0),
                    })
                })
                .clone();
            slot.last_used.store(self.now(), Ordering::Relaxed);
            slot
        };
        // One deadline for this caller, however many failed initialisations
        // of the same slot queue ahead of it.
        let deadline = tokio::time::Instant::now() + self.acquire_timeout;
        slot.entry
            .get_or_try_init(|| async {
                let permit = self.permits(tenant, deadline).await?;
                self.open.fetch_add(1, Ordering::SeqCst);
                Ok(Arc::new(PoolEntry {
                    pool: make_pool(self.per_pool),
                    permit: Some(permit),
                    open: self.open.clone(),
                }))
            })
            .await
            .cloned()
    }

    /// Permits for a new pool: when short, evicts the least recently used
    /// pools and waits (bounded) for them to be closed. Eviction is redone
    /// while waiting: pools opened meanwhile by others stay in the registry
    /// after their requests are done, holding permits until evicted.
    async fn permits(
        &self,
        tenant: TenantId,
        deadline: tokio::time::Instant,
    ) -> StoreResult<OwnedSemaphorePermit> {
        loop {
            if let Ok(permit) = self.permits.clone().try_acquire_many_owned(self.per_pool) {
                return Ok(permit);
            }
            self.evict_for(tenant);
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(StoreError::Unavailable(
                    "every connection for dedicated tenant databases is in use".into(),
                ));
            }
            let wait = (deadline - now).min(Duration::from_millis(50));
            match tokio::time::timeout(wait, self.permits.clone().acquire_many_owned(self.per_pool))
                .await
            {
                Ok(Ok(permit)) => return Ok(permit),
                Ok(Err(_)) => {
                    return Err(StoreError::Unavailable(
                        "the dedicated tier is closed".into(),
                    ));
                }
                Err(_) => {}
            }
        }
    }

    /// Forgets pools, least recently used first, until those left leave
    /// room for one more. Pools still in use close when their users are done.
    fn evict_for(&self, tenant: TenantId) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let mut held: Vec<(u64, TenantId)> = slots
            .iter()
            .filter(|(t, s)| **t != tenant && s.entry.initialized())
            .map(|(t, s)| (s.last_used.load(Ordering::Relaxed), *t))
            .collect();
        held.sort_unstable();
        let max_held = (self.cap / self.per_pool).saturating_sub(1) as usize;
        let excess = held.len().saturating_sub(max_held);
        for (_, t) in held.into_iter().take(excess) {
            slots.remove(&t);
        }
    }

    fn sweep(&self) {
        let now = self.now();
        let ttl = IDLE_TTL.as_millis() as u64;
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.retain(|_, s| now.saturating_sub(s.last_used.load(Ordering::Relaxed)) < ttl);
    }

    fn remove(&self, tenant: TenantId) -> Option<Arc<Slot>> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.remove(&tenant)
    }
}

async fn sweep_idle(registry: Weak<Registry>) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        match registry.upgrade() {
            Some(registry) => registry.sweep(),
            None => return,
        }
    }
}

/// The data plane's operations on this server.
impl PgServer {
    async fn provision(&self, tenant: &Tenant) -> StoreResult<()> {
        let entry;
        let pool = match tenant.isolation {
            Isolation::Shared => &self.db.runtime,
            Isolation::Dedicated => {
                let name = self.db_name(tenant.id);
                ensure_database(&self.db.admin_options, &name, Some(&self.template)).await?;
                entry = self.dedicated_entry(tenant.id).await?;
                &entry.pool
            }
        };
        // The mark that the tenant's data lives here (see `lock_usage`),
        // written through the runtime role: it also proves the role gets in.
        let mut tx = tenant_tx(pool, tenant.id).await?;
        sqlx::query(&format!(
            "INSERT INTO {DATA_SCHEMA}.usage (tenant_id) VALUES ($1) ON CONFLICT (tenant_id) DO NOTHING"
        ))
        .bind(tenant.id.0)
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)
    }

    async fn migrate_tenant(&self, tenant: &Tenant) -> StoreResult<()> {
        if tenant.isolation != Isolation::Dedicated {
            return Ok(());
        }
        let name = self.db_name(tenant.id);
        check_identifier(&name)?;
        let what = format!("tenant {}'s database", tenant.slug);
        migrate_tenant_database(&self.db, &name, &what).await
    }

    async fn handle(&self, tenant: &Tenant) -> StoreResult<Arc<dyn TenantData>> {
        let backend = match tenant.isolation {
            Isolation::Shared => Backend::Shared {
                pool: self.db.runtime.clone(),
                admin: self.db.admin.clone(),
            },
            Isolation::Dedicated => Backend::Dedicated {
                entry: self.dedicated_entry(tenant.id).await?,
                admin: Box::new(
                    self.db
                        .admin_options
                        .clone()
                        .database(&self.db_name(tenant.id)),
                ),
            },
        };
        Ok(Arc::new(PgTenantData {
            backend,
            tenant: tenant.id,
            restored: AtomicU64::new(0),
        }))
    }

    async fn purge(&self, tenant: &Tenant) -> StoreResult<()> {
        match tenant.isolation {
            Isolation::Shared => {
                let mut tx = tenant_tx(&self.db.runtime, tenant.id).await?;
                without_statement_timeout(&mut tx).await?;
                // Writers lock the usage row first; so does the purge, so an
                // in-flight write and the purge queue instead of deadlocking.
                for table in ["usage", "record_uniques", "records", "collections"] {
                    sqlx::query(&format!(
                        "DELETE FROM {DATA_SCHEMA}.{table} WHERE tenant_id = $1"
                    ))
                    .bind(tenant.id.0)
                    .execute(&mut *tx)
                    .await
                    .map_err(pg_error)?;
                }
                tx.commit().await.map_err(pg_error)
            }
            Isolation::Dedicated => {
                if let Some(entry) = self
                    .registry
                    .remove(tenant.id)
                    .and_then(|slot| slot.entry.get().cloned())
                {
                    entry.pool.close().await;
                }
                drop_database(&self.db.admin_options, &self.db_name(tenant.id)).await
            }
        }
    }
}

enum Backend {
    /// The main database: runtime pool for rows, owner pool for index DDL.
    Shared { pool: PgPool, admin: PgPool },
    /// The tenant's database: its registry entry, and how to reach it as owner.
    Dedicated {
        entry: Arc<PoolEntry>,
        admin: Box<sqlx::postgres::PgConnectOptions>,
    },
}

/// A handle bound to one tenant: every statement runs in its `tenant_tx`
/// and binds its id.
struct PgTenantData {
    backend: Backend,
    tenant: TenantId,
    /// Records this handle has restored (an import, a move's copy).
    restored: AtomicU64,
}

/// Lifts the runtime role's `statement_timeout` for this transaction: a
/// background job deleting a large tenant's rows may take longer than any
/// request should.
pub(crate) async fn without_statement_timeout(tx: &mut PgConnection) -> StoreResult<()> {
    sqlx::query("SET LOCAL statement_timeout = 0")
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
    Ok(())
}

/// 0 below a thousand, then the power of ten: a bulk load refreshes the
/// planner's statistics at 1k, 10k, 100k… records.
fn decade(n: u64) -> u32 {
    if n < 1000 { 0 } else { n.ilog10() }
}

impl PgTenantData {
    /// Refreshes the planner's statistics of the tables a bulk load fills.
    /// Without them (a new database, or autovacuum not yet round) the
    /// planner took a 1000-key lookup for a scan of the tenant's whole
    /// collection, and a 100k-record import slowed to a crawl. Statistics
    /// are an optimisation: a failure is logged, not raised.
    async fn analyze(&self) {
        let sql = format!("ANALYZE {DATA_SCHEMA}.records, {DATA_SCHEMA}.record_uniques");
        let done = match &self.backend {
            Backend::Shared { admin, .. } => sqlx::query(&sql).execute(admin).await.map(|_| ()),
            Backend::Dedicated { admin, .. } => match admin.connect().await {
                Ok(mut conn) => {
                    let done = sqlx::query(&sql).execute(&mut conn).await.map(|_| ());
                    let _ = conn.close().await;
                    done
                }
                Err(e) => Err(e),
            },
        };
        if let Err(e) = done {
            tracing::warn!(error = %e, "refreshing statistics after a bulk load failed");
        }
    }
}

fn collection_from_row(row: &PgRow) -> StoreResult<CollectionDef> {
    let schema: Option<Json<Value>> = row.try_get("schema").map_err(pg_error)?;
    let unique: Json<Value> = row.try_get("unique_fields").map_err(pg_error)?;
    let indexed: Json<Value> = row.try_get("indexed_fields").map_err(pg_error)?;
    Ok(CollectionDef {
        name: row.try_get("name").map_err(pg_error)?,
        schema: schema.map(|s| s.0),
        unique: strings(unique.0),
        indexed: strings(indexed.0),
        required_feature: row.try_get("required_feature").map_err(pg_error)?,
        created_at: row.try_get("created_at").map_err(pg_error)?,
        updated_at: row.try_get("updated_at").map_err(pg_error)?,
    })
}

fn record_from_row(row: &PgRow) -> StoreResult<Record> {
    let id: Uuid = row.try_get("id").map_err(pg_error)?;
    let data: Json<Value> = row.try_get("data").map_err(pg_error)?;
    let created_by: Option<Uuid> = row.try_get("created_by").map_err(pg_error)?;
    Ok(Record {
        id: RecordId(id),
        data: data.0,
        version: row.try_get("version").map_err(pg_error)?,
        created_at: row.try_get("created_at").map_err(pg_error)?,
        updated_at: row.try_get("updated_at").map_err(pg_error)?,
        created_by: created_by.map(crate::ids::UserId),
    })
}

const RECORD_COLUMNS: &str = "id, data, version, created_at, updated_at, created_by";
const COLLECTION_COLUMNS: &str =
    "name, schema, unique_fields, indexed_fields, required_feature, created_at, updated_at";

/// `{a,b}`: the text[] path of a validated dotted field.
fn pg_path(field: &str) -> String {
    format!("{{{}}}", field.replace('.', ","))
}

fn path_parts(field: &str) -> Vec<String> {
    field.split('.').map(str::to_owned).collect()
}

/// The sort expressions of an indexed field, mirroring SQLite's
/// `coalesce(json_extract(data, path), '')`: numbers (booleans as 0 and 1)
/// first, numerically; then text in byte order, where a missing field or
/// JSON null is '' and objects and arrays are their JSON text. As a tuple
/// (rank, number, text) with no NULLs, so row comparisons are total and
/// match the index column for column. The text is cut to its first
/// [`SORT_TEXT_CHARS`] characters: a whole long value would break B-tree's
/// entry size limit. The path is spliced: the index and the query must use
/// the same expressions. Field names come from the collection's stored
/// (validated) definition.
fn field_sort_exprs(field: &str) -> [String; 3] {
    let p = pg_path(field);
    let v = format!("(data #> '{p}')");
    let t = format!("jsonb_typeof({v})");
    [
        format!("(CASE WHEN {t} IN ('number', 'boolean') THEN 0 ELSE 1 END)"),
        format!(
            "(CASE {t} WHEN 'number' THEN (data #>> '{p}')::float8 \
             WHEN 'boolean' THEN (CASE WHEN {v} = 'true'::jsonb THEN 1 ELSE 0 END)::float8 \
             ELSE 0::float8 END)"
        ),
        format!(
            "(left(CASE {t} WHEN 'string' THEN data #>> '{p}' \
             WHEN 'object' THEN {v}::text WHEN 'array' THEN {v}::text \
             ELSE '' END, {SORT_TEXT_CHARS}) COLLATE \"C\")"
        ),
    ]
}

/// Characters of a text sort key: at most 4 bytes each, well under B-tree's
/// limit of about 2700 bytes per entry. Texts equal this far sort by id.
const SORT_TEXT_CHARS: u32 = 512;

/// The claimed form of a unique value: its JSON text, or for a long one (a
/// B-tree entry holds about 2700 bytes) a digest of it, which no JSON text
/// can spell.
fn unique_key(value: &Value) -> String {
    use sha2::{Digest, Sha256};
    let text = value.to_string();
    if text.len() <= 1024 {
        return text;
    }
    format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes())))
}

/// `records_k_<field>`; names beyond PostgreSQL's 63 bytes keep a hash of the whole.
fn index_name(field: &str) -> String {
    let name = format!("records_k_{}", field.replace('.', "__"));
    if name.len() <= 63 {
        return name;
    }
    // FNV-1a: stable across builds and platforms.
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{}_{hash:016x}", &name[..63 - 17])
}

/// PostgreSQL text cannot hold NUL, and stored JSON strings never contain
/// one: a comparison with such an operand is decided by the part before it.
enum TextOperand {
    Plain(String),
    /// The part before the first NUL.
    Cut(String),
}

fn text_operand(s: &str) -> TextOperand {
    match s.find('\0') {
        None => TextOperand::Plain(s.to_owned()),
        Some(i) => TextOperand::Cut(s[..i].to_owned()),
    }
}

/// A typed comparison: false (never NULL) for a missing field or another type.
fn push_compare(q: &mut QueryBuilder<'_, Postgres>, field: &str, cmp: &str, op: &Operand) {
    match op {
        Operand::Number(n) => {
            q.push("(CASE WHEN jsonb_typeof(data #> ")
                .push_bind(path_parts(field))
                .push("::text[]) = 'number' THEN (data #>> ")
                .push_bind(path_parts(field))
                .push(format_args!("::text[])::float8 {cmp} "))
                .push_bind(*n)
                .push("::float8 ELSE false END)");
        }
        Operand::Text(s) => {
            // With s = p + "\0…" and a stored t without NUL: t = s never;
            // t >= s iff t > p; t <= s iff t <= p.
            let (cmp, operand) = match text_operand(s) {
                TextOperand::Plain(s) => (cmp, s),
                TextOperand::Cut(p) => match cmp {
                    "=" => {
                        q.push("false");
                        return;
                    }
                    ">=" => (">", p),
                    _ => ("<=", p),
                },
            };
            q.push("(CASE WHEN jsonb_typeof(data #> ")
                .push_bind(path_parts(field))
                .push("::text[]) = 'string' THEN (data #>> ")
                .push_bind(path_parts(field))
                .push(format_args!("::text[]) COLLATE \"C\" {cmp} "))
                .push_bind(operand)
                .push("::text ELSE false END)");
        }
    }
}

/// Index DDL is the owner's; runs only when the index is missing, and a
/// concurrent creation of the same index counts as success. `CONCURRENTLY`:
/// on the shared tier the table holds every tenant's records, and a plain
/// build would block all of their writes until it finished. A build that
/// failed midway leaves an invalid index behind; it is dropped and rebuilt.
async fn create_index(conn: &mut PgConnection, field: &str) -> StoreResult<()> {
    let [rank, num, text] = field_sort_exprs(field);
    let name = index_name(field);
    let invalid: Option<bool> = sqlx::query_scalar(
        "SELECT NOT i.indisvalid FROM pg_index i
         WHERE i.indexrelid = to_regclass($1)",
    )
    .bind(format!("{DATA_SCHEMA}.{name}"))
    .fetch_optional(&mut *conn)
    .await
    .map_err(pg_error)?;
    if invalid == Some(true) {
        let drop = format!("DROP INDEX CONCURRENTLY IF EXISTS {DATA_SCHEMA}.{name}");
        sqlx::query(&drop)
            .execute(&mut *conn)
            .await
            .map_err(pg_error)?;
    }
    let sql = format!(
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {DATA_SCHEMA}.records \
         (tenant_id, collection, {rank}, {num}, {text}, id)"
    );
    match sqlx::query(&sql).execute(&mut *conn).await {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(e))
            if matches!(e.code().as_deref(), Some("42P07") | Some("23505")) =>
        {
            Ok(())
        }
        Err(e) => Err(pg_error(e)),
    }
}

impl PgTenantData {
    fn pool(&self) -> &PgPool {
        match &self.backend {
            Backend::Shared { pool, .. } => pool,
            Backend::Dedicated { entry, .. } => &entry.pool,
        }
    }

    async fn tx(&self) -> StoreResult<sqlx::Transaction<'static, Postgres>> {
        tenant_tx(self.pool(), self.tenant).await
    }

    /// Locks the tenant's usage row and returns its storage: every write
    /// takes it first, so a tenant's writes are serialised as on SQLite —
    /// quota checks, version checks and unique claims see each other, and
    /// locks are always taken in the same order. The row says the tenant's
    /// data lives here (`Absent` without it: moved away, purged, or never
    /// written before the mark existed) and takes writes (`Sealed` while a
    /// job holds the copy); a seal waits for the writes holding the lock.
    async fn lock_usage(&self, conn: &mut PgConnection) -> StoreResult<u64> {
        let row: Option<(i64, bool)> = sqlx::query_as(&format!(
            "SELECT storage_bytes, sealed FROM {DATA_SCHEMA}.usage WHERE tenant_id = $1 FOR UPDATE"
        ))
        .bind(self.tenant.0)
        .fetch_optional(&mut *conn)
        .await
        .map_err(pg_error)?;
        match row {
            None => Err(StoreError::Absent),
            Some((_, true)) => Err(StoreError::Sealed),
            Some((n, false)) => Ok(n.max(0) as u64),
        }
    }

    /// The usage row locked for a restore, created if missing (restores
    /// ignore the seal).
    async fn lock_usage_for_restore(&self, conn: &mut PgConnection) -> StoreResult<()> {
        sqlx::query(&format!(
            "INSERT INTO {DATA_SCHEMA}.usage AS u (tenant_id) VALUES ($1)
             ON CONFLICT (tenant_id) DO UPDATE SET records = u.records"
        ))
        .bind(self.tenant.0)
        .execute(&mut *conn)
        .await
        .map_err(pg_error)?;
        Ok(())
    }

    /// Creates or replaces a definition row (`created_at` of an existing one stays).
    async fn upsert_collection(
        &self,
        conn: &mut PgConnection,
        def: &CollectionDef,
    ) -> StoreResult<()> {
        sqlx::query(&format!(
            "INSERT INTO {DATA_SCHEMA}.collections (tenant_id, name, schema, unique_fields, indexed_fields,
                required_feature, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (tenant_id, name) DO UPDATE SET schema = excluded.schema,
                unique_fields = excluded.unique_fields, indexed_fields = excluded.indexed_fields,
                required_feature = excluded.required_feature, updated_at = excluded.updated_at"
        ))
        .bind(self.tenant.0)
        .bind(&def.name)
        .bind(def.schema.as_ref().map(Json))
        .bind(Json(&def.unique))
        .bind(Json(&def.indexed))
        .bind(&def.required_feature)
        .bind(def.created_at)
        .bind(def.updated_at)
        .execute(&mut *conn)
        .await
        .map_err(pg_error)?;
        Ok(())
    }

    async fn set_sealed(&self, sealed: bool) -> StoreResult<()> {
        let mut tx = self.tx().await?;
        sqlx::query(&format!(
            "INSERT INTO {DATA_SCHEMA}.usage (tenant_id, sealed) VALUES ($1, $2)
             ON CONFLICT (tenant_id) DO UPDATE SET sealed = excluded.sealed"
        ))
        .bind(self.tenant.0)
        .bind(sealed)
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)
    }

    /// Claims every record's values of the collection's unique fields anew,
    /// a page of records at a time (`take_over`: as a restore claims).
    async fn rebuild_claims(
        &self,
        conn: &mut PgConnection,
        def: &CollectionDef,
        take_over: bool,
    ) -> StoreResult<()> {
        sqlx::query(&format!(
            "DELETE FROM {DATA_SCHEMA}.record_uniques WHERE tenant_id = $1 AND collection = $2"
        ))
        .bind(self.tenant.0)
        .bind(&def.name)
        .execute(&mut *conn)
        .await
        .map_err(pg_error)?;
        if def.unique.is_empty() {
            return Ok(());
        }
        let mut after = Uuid::nil();
        loop {
            let rows = sqlx::query(&format!(
                "SELECT {RECORD_COLUMNS} FROM {DATA_SCHEMA}.records
                 WHERE tenant_id = $1 AND collection = $2 AND id > $3 ORDER BY id LIMIT 1000"
            ))
            .bind(self.tenant.0)
            .bind(&def.name)
            .bind(after)
            .fetch_all(&mut *conn)
            .await
            .map_err(pg_error)?;
            let Some(last) = rows.last() else {
                return Ok(());
            };
            after = last.try_get("id").map_err(pg_error)?;
            for row in &rows {
                let record = record_from_row(row)?;
                self.claim(conn, &def.name, &def.unique, &record, take_over)
                    .await?;
            }
        }
    }

    async fn add_usage(
        &self,
        conn: &mut PgConnection,
        records: i64,
        bytes: i64,
    ) -> StoreResult<()> {
        sqlx::query(&format!(
            "INSERT INTO {DATA_SCHEMA}.usage AS u (tenant_id, records, storage_bytes) VALUES ($1, $2, $3)
             ON CONFLICT (tenant_id) DO UPDATE
             SET records = u.records + excluded.records, storage_bytes = u.storage_bytes + excluded.storage_bytes"
        ))
        .bind(self.tenant.0)
        .bind(records)
        .bind(bytes)
        .execute(&mut *conn)
        .await
        .map_err(pg_error)?;
        Ok(())
    }

    /// The unique fields as stored now. Writes claim these rather than those
    /// of the caller's definition, which may come from a cache that has not
    /// yet seen another instance add a unique field.
    async fn stored_unique(
        &self,
        conn: &mut PgConnection,
        collection: &str,
    ) -> StoreResult<Vec<String>> {
        let fields: Option<Json<Vec<String>>> = sqlx::query_scalar(&format!(
            "SELECT unique_fields FROM {DATA_SCHEMA}.collections WHERE tenant_id = $1 AND name = $2"
        ))
        .bind(self.tenant.0)
        .bind(collection)
        .fetch_optional(&mut *conn)
        .await
        .map_err(pg_error)?;
        Ok(fields.map(|Json(f)| f).unwrap_or_default())
    }

    /// A collection's unique fields as stored, if it is defined.
    async fn stored_unique_opt(
        &self,
        conn: &mut PgConnection,
        collection: &str,
    ) -> StoreResult<Option<Vec<String>>> {
        let fields: Option<Json<Vec<String>>> = sqlx::query_scalar(&format!(
            "SELECT unique_fields FROM {DATA_SCHEMA}.collections WHERE tenant_id = $1 AND name = $2"
        ))
        .bind(self.tenant.0)
        .bind(collection)
        .fetch_optional(&mut *conn)
        .await
        .map_err(pg_error)?;
        Ok(fields.map(|Json(f)| f))
    }

    /// Claims the record's values of `fields`; a taken one is `Conflict(field)`.
    async fn claim_uniques(
        &self,
        conn: &mut PgConnection,
        collection: &str,
        fields: &[String],
        record: &Record,
    ) -> StoreResult<()> {
        self.claim(conn, collection, fields, record, false).await
    }

    /// Claims as `claim_uniques` does, or (`take_over`) takes a claimed
    /// value over: a restore copies rows read at different times, and a
    /// value may still be claimed by a record whose newer version arrives later.
    async fn claim(
        &self,
        conn: &mut PgConnection,
        collection: &str,
        fields: &[String],
        record: &Record,
        take_over: bool,
    ) -> StoreResult<()> {
        let on_conflict = if take_over {
            " ON CONFLICT (tenant_id, collection, field, value) DO UPDATE SET record_id = excluded.record_id"
        } else {
            ""
        };
        for field in fields {
            let Some(value) =
                crate::record::field_value(&record.data, field).filter(|v| !v.is_null())
            else {
                continue;
            };
            sqlx::query(&format!(
                "INSERT INTO {DATA_SCHEMA}.record_uniques (tenant_id, collection, field, value, record_id)
                 VALUES ($1, $2, $3, $4, $5){on_conflict}"
            ))
            .bind(self.tenant.0)
            .bind(collection)
            .bind(field)
            .bind(unique_key(value))
            .bind(record.id.0)
            .execute(&mut *conn)
            .await
            .map_err(|e| match pg_error(e) {
                StoreError::Conflict(_) => StoreError::Conflict(field.clone()),
                other => other,
            })?;
        }
        Ok(())
    }

    /// Restored records, a statement per step for each collection's batch
    /// (an import or a move writes them by the thousand): sizes of those
    /// present, one upsert, their claims released and taken anew, and the
    /// usage moved once. A key given twice keeps its last record, as
    /// one-by-one upserts would.
    async fn restore_records(
        &self,
        conn: &mut PgConnection,
        records: &[(String, Record)],
    ) -> StoreResult<()> {
        let mut last: HashMap<(&str, Uuid), usize> = HashMap::new();
        for (i, (collection, r)) in records.iter().enumerate() {
            last.insert((collection.as_str(), r.id.0), i);
        }
        let mut by_collection: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
        for (i, (collection, r)) in records.iter().enumerate() {
            if last.get(&(collection.as_str(), r.id.0)) == Some(&i) {
                by_collection.entry(collection).or_default().push(r);
            }
        }
        let (mut added, mut bytes) = (0i64, 0i64);
        for (collection, rows) in by_collection {
            let ids: Vec<Uuid> = rows.iter().map(|r| r.id.0).collect();
            let sizes: Vec<i64> = rows
                .iter()
                .map(|r| r.data.to_string().len() as i64)
                .collect();
            // Plans of this lookup rely on the statistics `analyze` keeps
            // fresh during a bulk load (without them: a scan of the
            // tenant's whole collection per page).
            let old: HashMap<Uuid, i64> = sqlx::query_as::<_, (Uuid, i64)>(&format!(
                "SELECT id, size FROM {DATA_SCHEMA}.records
                 WHERE tenant_id = $1 AND collection = $2 AND id = ANY($3) FOR UPDATE"
            ))
            .bind(self.tenant.0)
            .bind(collection)
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await
            .map_err(pg_error)?
            .into_iter()
            .collect();
            sqlx::query(&format!(
                "INSERT INTO {DATA_SCHEMA}.records (tenant_id, collection, id, data, size, version,
                    created_at, updated_at, created_by)
                 SELECT $1, $2, r.* FROM unnest($3::uuid[], $4::jsonb[], $5::int8[], $6::int8[],
                    $7::timestamptz[], $8::timestamptz[], $9::uuid[])
                    AS r(id, data, size, version, created_at, updated_at, created_by)
                 ON CONFLICT (tenant_id, collection, id) DO UPDATE SET data = excluded.data,
                    size = excluded.size, version = excluded.version, created_at = excluded.created_at,
                    updated_at = excluded.updated_at, created_by = excluded.created_by"
            ))
            .bind(self.tenant.0)
            .bind(collection)
            .bind(&ids)
            .bind(rows.iter().map(|r| Json(&r.data)).collect::<Vec<_>>())
            .bind(&sizes)
            .bind(rows.iter().map(|r| r.version).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.created_at).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.updated_at).collect::<Vec<_>>())
            .bind(
                rows.iter()
                    .map(|r| r.created_by.map(|u| u.0))
                    .collect::<Vec<_>>(),
            )
            .execute(&mut *conn)
            .await
            .map_err(pg_error)?;
            sqlx::query(&format!(
                "DELETE FROM {DATA_SCHEMA}.record_uniques
                 WHERE tenant_id = $1 AND collection = $2 AND record_id = ANY($3)"
            ))
            .bind(self.tenant.0)
            .bind(collection)
            .bind(&ids)
            .execute(&mut *conn)
            .await
            .map_err(pg_error)?;
            let fields = self.stored_unique(conn, collection).await?;
            if !fields.is_empty() {
                for r in &rows {
                    self.claim(conn, collection, &fields, r, true).await?;
                }
            }
            for (r, size) in rows.iter().zip(&sizes) {
                match old.get(&r.id.0) {
                    Some(before) => bytes += size - before,
                    None => {
                        added += 1;
                        bytes += size;
                    }
                }
            }
        }
        if added != 0 || bytes != 0 {
            self.add_usage(conn, added, bytes).await?;
        }
        Ok(())
    }

    async fn release_uniques(
        &self,
        conn: &mut PgConnection,
        collection: &str,
        id: RecordId,
    ) -> StoreResult<()> {
        sqlx::query(&format!(
            "DELETE FROM {DATA_SCHEMA}.record_uniques
             WHERE tenant_id = $1 AND collection = $2 AND record_id = $3"
        ))
        .bind(self.tenant.0)
        .bind(collection)
        .bind(id.0)
        .execute(&mut *conn)
        .await
        .map_err(pg_error)?;
        Ok(())
    }

    /// Version and size of a stored record, locked for the transaction.
    async fn stored(
        &self,
        conn: &mut PgConnection,
        collection: &str,
        id: RecordId,
    ) -> StoreResult<Option<(i64, i64)>> {
        sqlx::query_as(&format!(
            "SELECT version, size FROM {DATA_SCHEMA}.records
             WHERE tenant_id = $1 AND collection = $2 AND id = $3 FOR UPDATE"
        ))
        .bind(self.tenant.0)
        .bind(collection)
        .bind(id.0)
        .fetch_optional(&mut *conn)
        .await
        .map_err(pg_error)
    }

    /// The stored sort tuple of the cursor's record, if it still sorts by
    /// the cursor's key.
    async fn stored_sort_tuple(
        &self,
        conn: &mut PgConnection,
        def: &CollectionDef,
        field: &str,
        sort: &SortKey,
        after: &crate::record::RecordCursor,
    ) -> StoreResult<Option<SortTuple>> {
        let [rank, num, text] = field_sort_exprs(field);
        let row = sqlx::query(&format!(
            "SELECT {RECORD_COLUMNS}, {rank} AS k_rank, {num} AS k_num, {text} AS k_text
             FROM {DATA_SCHEMA}.records WHERE tenant_id = $1 AND collection = $2 AND id = $3"
        ))
        .bind(self.tenant.0)
        .bind(&def.name)
        .bind(after.id.0)
        .fetch_optional(&mut *conn)
        .await
        .map_err(pg_error)?;
        let Some(row) = row else {
            return Ok(None);
        };
        if crate::record::sort_value(&record_from_row(&row)?, sort) != after.key {
            return Ok(None);
        }
        Ok(Some((
            row.try_get("k_rank").map_err(pg_error)?,
            row.try_get("k_num").map_err(pg_error)?,
            row.try_get("k_text").map_err(pg_error)?,
        )))
    }

    /// Creates the indexes of `def` that are missing, as the owner.
    async fn ensure_indexes(&self, def: &CollectionDef) -> StoreResult<()> {
        if def.indexed.is_empty() {
            return Ok(());
        }
        // Which exist: the catalog is readable by the runtime role.
        let names: Vec<String> = def
            .indexed
            .iter()
            .map(|f| format!("{DATA_SCHEMA}.{}", index_name(f)))
            .collect();
        let mut tx = self.tx().await?;
        let exists: Vec<bool> =
            sqlx::query_scalar("SELECT to_regclass(n) IS NOT NULL FROM unnest($1::text[]) WITH ORDINALITY AS t(n, i) ORDER BY i")
                .bind(&names)
                .fetch_all(&mut *tx)
                .await
                .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        let missing: Vec<&String> = def
            .indexed
            .iter()
            .zip(exists.iter().copied().chain(std::iter::repeat(false)))
            .filter(|(_, e)| !e)
            .map(|(f, _)| f)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        match &self.backend {
            Backend::Shared { admin, .. } => {
                let mut conn = admin.acquire().await.map_err(pg_error)?;
                for field in missing {
                    create_index(&mut conn, field).await?;
                }
                Ok(())
            }
            Backend::Dedicated { admin, .. } => {
                let mut conn = admin.connect().await.map_err(pg_error)?;
                let mut result = Ok(());
                for field in missing {
                    result = create_index(&mut conn, field).await;
                    if result.is_err() {
                        break;
                    }
                }
                let closed = conn.close().await.map_err(pg_error);
                result.and(closed)
            }
        }
    }
}

/// Pushes `AND (<sort key>, id) <cmp> (<cursor>)` for a timestamp column.
/// Cursors carry `time_text`; anything else compares as SQLite would compare
/// it with the stored text (numbers sort before all text).
fn push_time_cursor(
    q: &mut QueryBuilder<'_, Postgres>,
    column: &str,
    cmp: &str,
    key: &Value,
    id: Uuid,
) {
    let text = match key {
        Value::Number(_) => {
            q.push(if cmp == ">" {
                " AND true"
            } else {
                " AND false"
            });
            return;
        }
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let time = DateTime::parse_from_rfc3339(&text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
        .filter(|t| time_text(*t) == text);
    if let Some(time) = time {
        q.push(format_args!(" AND ({column}, id) {cmp} ("))
            .push_bind(time)
            .push(", ")
            .push_bind(id)
            .push(")");
        return;
    }
    let expr = format!(
        "(to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') COLLATE \"C\")"
    );
    let (text, id) = match text_operand(&text) {
        TextOperand::Plain(s) => (s, id),
        // Stored text never equals it: compare with the part before NUL, after every id.
        TextOperand::Cut(p) => (p, Uuid::max()),
    };
    q.push(format_args!(" AND ({expr}, id) {cmp} ("))
        .push_bind(text)
        .push("::text, ")
        .push_bind(id)
        .push(")");
}

/// The sort tuple of a field sort: (rank, number, text).
type SortTuple = (i32, f64, String);

/// Pushes `AND (<rank, number, text>, id) <cmp> (<cursor>)` for a field sort.
/// `stored` is the cursor record's own tuple, when it still has the key.
fn push_field_cursor(
    q: &mut QueryBuilder<'_, Postgres>,
    field: &str,
    cmp: &str,
    key: &Value,
    id: Uuid,
    stored: Option<SortTuple>,
) {
    let [rank, num, text] = field_sort_exprs(field);
    let (k_rank, k_num, k_text, id) = match (key, stored) {
        (_, Some((rank, num, text))) => (rank, num, text, id),
        (Value::Number(n), None) => (0i32, n.as_f64().unwrap_or(0.0), String::new(), id),
        (other, None) => {
            let s = match other {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            match text_operand(&s) {
                TextOperand::Plain(s) => (1, 0.0, s, id),
                TextOperand::Cut(p) => (1, 0.0, p, Uuid::max()),
            }
        }
    };
    q.push(format_args!(" AND ({rank}, {num}, {text}, id) {cmp} ("))
        .push_bind(k_rank)
        .push(", ")
        .push_bind(k_num)
        .push("::float8, left(")
        .push_bind(k_text)
        .push(format_args!("::text, {SORT_TEXT_CHARS}), "))
        .push_bind(id)
        .push(")");
}

#[async_trait]
impl TenantData for PgTenantData {
    async fn collections_after(&self, after: &str, limit: u32) -> StoreResult<Vec<CollectionDef>> {
        if after.contains('\0') {
            return Ok(Vec::new());
        }
        let mut tx = self.tx().await?;
        let rows = sqlx::query(&format!(
            "SELECT {COLLECTION_COLUMNS} FROM {DATA_SCHEMA}.collections
             WHERE tenant_id = $1 AND name COLLATE \"C\" > $2
             ORDER BY name COLLATE \"C\" LIMIT $3"
        ))
        .bind(self.tenant.0)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        rows.iter().map(collection_from_row).collect()
    }

    async fn collection(&self, name: &str) -> StoreResult<Option<CollectionDef>> {
        if name.contains('\0') {
            return Ok(None);
        }
        let mut tx = self.tx().await?;
        let row = sqlx::query(&format!(
            "SELECT {COLLECTION_COLUMNS} FROM {DATA_SCHEMA}.collections
             WHERE tenant_id = $1 AND name = $2"
        ))
        .bind(self.tenant.0)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        row.as_ref().map(collection_from_row).transpose()
    }

    async fn put_collection(&self, def: &CollectionDef, a: &NewAuditEntry) -> StoreResult<bool> {
        // Index DDL first, on the owner role (IF NOT EXISTS makes it idempotent).
        self.ensure_indexes(def).await?;
        let mut tx = self.tx().await?;
        self.lock_usage(&mut tx).await?;
        let existed: Option<i32> = sqlx::query_scalar(&format!(
            "SELECT 1 FROM {DATA_SCHEMA}.collections WHERE tenant_id = $1 AND name = $2"
        ))
        .bind(self.tenant.0)
        .bind(&def.name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg_error)?;
        // Rebuild the unique claims for the (possibly new) unique fields.
        self.rebuild_claims(&mut tx, def, false).await?;
        self.upsert_collection(&mut tx, def).await?;
        audit::append(&mut tx, &ChainAt::data(self.tenant), a).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(existed.is_none())
    }

    async fn create_collection_if_absent(
        &self,
        def: &CollectionDef,
        a: &NewAuditEntry,
    ) -> StoreResult<()> {
        let mut tx = self.tx().await?;
        self.lock_usage(&mut tx).await?;
        let done = sqlx::query(&format!(
            "INSERT INTO {DATA_SCHEMA}.collections (tenant_id, name, schema, unique_fields, indexed_fields,
                required_feature, created_at, updated_at)
             VALUES ($1, $2, NULL, '[]', '[]', NULL, $3, $4) ON CONFLICT (tenant_id, name) DO NOTHING"
        ))
        .bind(self.tenant.0)
        .bind(&def.name)
        .bind(def.created_at)
        .bind(def.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        if done.rows_affected() > 0 {
            audit::append(&mut tx, &ChainAt::data(self.tenant), a).await?;
        }
        tx.commit().await.map_err(pg_error)
    }

    async fn insert_record(
        &self,
        def: &CollectionDef,
        r: &Record,
        max_storage: Option<u64>,
        a: &NewAuditEntry,
    ) -> StoreResult<()> {
        // The quota's unit: the bytes of the data as the API serialised it.
        let size = r.data.to_string().len() as i64;
        let mut tx = self.tx().await?;
        check_quota(self.lock_usage(&mut tx).await?, size, max_storage)?;
        sqlx::query(&format!(
            "INSERT INTO {DATA_SCHEMA}.records (tenant_id, collection, id, data, size, version,
                created_at, updated_at, created_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
        .bind(self.tenant.0)
        .bind(&def.name)
        .bind(r.id.0)
        .bind(Json(&r.data))
        .bind(size)
        .bind(r.version)
        .bind(r.created_at)
        .bind(r.updated_at)
        .bind(r.created_by.map(|u| u.0))
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        let unique = self.stored_unique(&mut tx, &def.name).await?;
        self.claim_uniques(&mut tx, &def.name, &unique, r).await?;
        self.add_usage(&mut tx, 1, size).await?;
        audit::append(&mut tx, &ChainAt::data(self.tenant), a).await?;
        tx.commit().await.map_err(pg_error)
    }

    async fn record(&self, collection: &str, id: RecordId) -> StoreResult<Option<Record>> {
        if collection.contains('\0') {
            return Ok(None);
        }
        let mut tx = self.tx().await?;
        let row = sqlx::query(&format!(
            "SELECT {RECORD_COLUMNS} FROM {DATA_SCHEMA}.records
             WHERE tenant_id = $1 AND collection = $2 AND id = $3"
        ))
        .bind(self.tenant.0)
        .bind(collection)
        .bind(id.0)
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        row.as_ref().map(record_from_row).transpose()
    }

    async fn list_records(
        &self,
        def: &CollectionDef,
        query: &RecordQuery,
    ) -> StoreResult<Vec<Record>> {
        let mut q = QueryBuilder::<Postgres>::new(format!(
            "SELECT {RECORD_COLUMNS} FROM {DATA_SCHEMA}.records WHERE tenant_id = "
        ));
        q.push_bind(self.tenant.0)
            .push(" AND collection = ")
            .push_bind(def.name.clone());
        for f in &query.filters {
            let Some(first) = f.operands.first() else {
                continue;
            };
            q.push(" AND ");
            match f.op {
                FilterOp::Eq => push_compare(&mut q, &f.field, "=", first),
                FilterOp::Ne => {
                    q.push("NOT ");
                    push_compare(&mut q, &f.field, "=", first);
                }
                FilterOp::Gte => push_compare(&mut q, &f.field, ">=", first),
                FilterOp::Lte => push_compare(&mut q, &f.field, "<=", first),
                FilterOp::In => {
                    q.push("(false");
                    for op in &f.operands {
                        q.push(" OR ");
                        push_compare(&mut q, &f.field, "=", op);
                    }
                    q.push(")");
                }
            }
        }
        let (cmp, dir) = if query.descending {
            ("<", "DESC")
        } else {
            (">", "ASC")
        };
        let order: Vec<String> = match &query.sort {
            SortKey::CreatedAt => vec!["created_at".into()],
            SortKey::UpdatedAt => vec!["updated_at".into()],
            SortKey::Field(f) => field_sort_exprs(f).into(),
        };
        let mut tx = self.tx().await?;
        // Objects and arrays sort by their JSON text, which jsonb spells
        // unlike serde_json (the cursor's spelling): when the cursor's
        // record still has the cursor's key, page from its stored tuple.
        let stored = match (&query.sort, &query.after) {
            (SortKey::Field(f), Some(after))
                if after
                    .key
                    .as_str()
                    .is_some_and(|k| k.starts_with(['{', '['])) =>
            {
                self.stored_sort_tuple(&mut tx, def, f, &query.sort, after)
                    .await?
            }
            _ => None,
        };
        if let Some(after) = &query.after {
            match &query.sort {
                SortKey::CreatedAt => {
                    push_time_cursor(&mut q, "created_at", cmp, &after.key, after.id.0)
                }
                SortKey::UpdatedAt => {
                    push_time_cursor(&mut q, "updated_at", cmp, &after.key, after.id.0)
                }
                SortKey::Field(f) => {
                    push_field_cursor(&mut q, f, cmp, &after.key, after.id.0, stored)
                }
            }
        }
        q.push(" ORDER BY ");
        for expr in &order {
            q.push(format_args!("{expr} {dir}, "));
        }
        q.push(format_args!("id {dir} LIMIT "));
        q.push_bind(i64::from(query.limit.max(1)));
        let rows = q.build().fetch_all(&mut *tx).await.map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        rows.iter().map(record_from_row).collect()
    }

    async fn update_record(
        &self,
        def: &CollectionDef,
        r: &Record,
        expected: i64,
        max_storage: Option<u64>,
        a: &NewAuditEntry,
    ) -> StoreResult<()> {
        let size = r.data.to_string().len() as i64;
        let mut tx = self.tx().await?;
        let current = self.lock_usage(&mut tx).await?;
        let (version, old_size) = self
            .stored(&mut tx, &def.name, r.id)
            .await?
            .ok_or(StoreError::NotFound)?;
        if version != expected {
            return Err(StoreError::VersionMismatch);
        }
        let delta = size - old_size;
        check_quota(current, delta, max_storage)?;
        sqlx::query(&format!(
            "UPDATE {DATA_SCHEMA}.records SET data = $1, size = $2, version = $3, updated_at = $4
             WHERE tenant_id = $5 AND collection = $6 AND id = $7"
        ))
        .bind(Json(&r.data))
        .bind(size)
        .bind(r.version)
        .bind(r.updated_at)
        .bind(self.tenant.0)
        .bind(&def.name)
        .bind(r.id.0)
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        self.release_uniques(&mut tx, &def.name, r.id).await?;
        let unique = self.stored_unique(&mut tx, &def.name).await?;
        self.claim_uniques(&mut tx, &def.name, &unique, r).await?;
        self.add_usage(&mut tx, 0, delta).await?;
        audit::append(&mut tx, &ChainAt::data(self.tenant), a).await?;
        tx.commit().await.map_err(pg_error)
    }

    async fn delete_record(
        &self,
        def: &CollectionDef,
        id: RecordId,
        expected: Option<i64>,
        a: &NewAuditEntry,
    ) -> StoreResult<()> {
        let mut tx = self.tx().await?;
        self.lock_usage(&mut tx).await?;
        let (version, size) = self
            .stored(&mut tx, &def.name, id)
            .await?
            .ok_or(StoreError::NotFound)?;
        if expected.is_some_and(|e| e != version) {
            return Err(StoreError::VersionMismatch);
        }
        sqlx::query(&format!(
            "DELETE FROM {DATA_SCHEMA}.records WHERE tenant_id = $1 AND collection = $2 AND id = $3"
        ))
        .bind(self.tenant.0)
        .bind(&def.name)
        .bind(id.0)
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        self.release_uniques(&mut tx, &def.name, id).await?;
        self.add_usage(&mut tx, -1, -size).await?;
        audit::append(&mut tx, &ChainAt::data(self.tenant), a).await?;
        tx.commit().await.map_err(pg_error)
    }

    async fn group_counts(
        &self,
        collection: &str,
        field: &str,
        max_groups: u32,
    ) -> StoreResult<GroupCounts> {
        if collection.contains('\0') {
            return Ok(GroupCounts::default());
        }
        // Keys as SQLite's json_extract gives them: a missing field is NULL,
        // booleans are 0 and 1, everything else its JSON text (numbers keep
        // their stored spelling, so 1 and 1.0 are two groups there too).
        // The total is summed over every group before the limit.
        let mut tx = self.tx().await?;
        let rows: Vec<(Option<String>, i64, i64)> = sqlx::query_as(&format!(
            "SELECT k, n, (sum(n) OVER ())::int8 FROM (
                 SELECT CASE jsonb_typeof(data #> $1::text[])
                            WHEN 'boolean' THEN CASE WHEN data #> $1::text[] = 'true'::jsonb THEN '1' ELSE '0' END
                            ELSE (data #> $1::text[])::text END AS k, count(*) AS n
                 FROM {DATA_SCHEMA}.records WHERE tenant_id = $2 AND collection = $3 GROUP BY k) g
             ORDER BY n DESC, k LIMIT $4"
        ))
        .bind(path_parts(field))
        .bind(self.tenant.0)
        .bind(collection)
        .bind(i64::from(max_groups) + 1)
        .fetch_all(&mut *tx)
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(group_counts_from(rows, max_groups))
    }

    async fn usage(&self) -> StoreResult<Usage> {
        let mut tx = self.tx().await?;
        let row: Option<(i64, i64)> = sqlx::query_as(&format!(
            "SELECT records, storage_bytes FROM {DATA_SCHEMA}.usage WHERE tenant_id = $1"
        ))
        .bind(self.tenant.0)
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
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
        let mut tx = self.tx().await?;
        let at = ChainAt::data(self.tenant);
        let entries = audit::list(&mut tx, &at, filter, after_seq, limit).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(entries)
    }
    async fn audit_head(&self) -> StoreResult<Option<(i64, String)>> {
        let mut tx = self.tx().await?;
        let head = audit::head(&mut tx, &ChainAt::data(self.tenant)).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(head)
    }

    async fn last_record_id(&self, collection: &str) -> StoreResult<Option<RecordId>> {
        let mut tx = self.tx().await?;
        let id: Option<Uuid> = sqlx::query_scalar(&format!(
            "SELECT id FROM {DATA_SCHEMA}.records WHERE tenant_id = $1 AND collection = $2
             ORDER BY id DESC LIMIT 1"
        ))
        .bind(self.tenant.0)
        .bind(collection)
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(id.map(RecordId))
    }

    async fn scan_records(
        &self,
        after: Option<&(String, RecordId)>,
        limit: u32,
    ) -> StoreResult<Vec<(String, Record)>> {
        // The primary key's order (default collation): an index scan, page by page.
        let (collection, id) =
            after.map_or((String::new(), Uuid::nil()), |(c, id)| (c.clone(), id.0));
        let mut tx = self.tx().await?;
        let rows = sqlx::query(&format!(
            "SELECT collection, {RECORD_COLUMNS} FROM {DATA_SCHEMA}.records
             WHERE tenant_id = $1 AND (collection, id) > ($2, $3)
             ORDER BY collection, id LIMIT $4"
        ))
        .bind(self.tenant.0)
        .bind(collection)
        .bind(id)
        .bind(i64::from(limit.max(1)))
        .fetch_all(&mut *tx)
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("collection").map_err(pg_error)?,
                    record_from_row(r)?,
                ))
            })
            .collect()
    }

    async fn restore(&self, restore: &Restore) -> StoreResult<()> {
        if restore.is_empty() {
            return Ok(());
        }
        for def in &restore.collections {
            self.ensure_indexes(def).await?;
        }
        let mut tx = self.tx().await?;
        self.lock_usage_for_restore(&mut tx).await?;
        for def in &restore.collections {
            let before = self.stored_unique_opt(&mut tx, &def.name).await?;
            self.upsert_collection(&mut tx, def).await?;
            if before.as_ref() != Some(&def.unique) {
                self.rebuild_claims(&mut tx, def, true).await?;
            }
        }
        for (collection, id) in &restore.removed {
            if let Some((_, size)) = self.stored(&mut tx, collection, *id).await? {
                sqlx::query(&format!(
                    "DELETE FROM {DATA_SCHEMA}.records WHERE tenant_id = $1 AND collection = $2 AND id = $3"
                ))
                .bind(self.tenant.0)
                .bind(collection)
                .bind(id.0)
                .execute(&mut *tx)
                .await
                .map_err(pg_error)?;
                self.release_uniques(&mut tx, collection, *id).await?;
                self.add_usage(&mut tx, -1, -size).await?;
            }
        }
        self.restore_records(&mut tx, &restore.records).await?;
        let chain = ChainAt::data(self.tenant);
        audit::insert_all(&mut tx, &chain, &restore.audit).await?;
        audit::append_all_at(&mut tx, &chain, &restore.relink).await?;
        if let Some(entry) = &restore.append {
            audit::append(&mut tx, &chain, entry).await?;
        }
        tx.commit().await.map_err(pg_error)?;
        let loaded = restore.records.len() as u64;
        let before = self.restored.fetch_add(loaded, Ordering::Relaxed);
        if decade(before + loaded) > decade(before) {
            self.analyze().await;
        }
        Ok(())
    }

    async fn seal(&self) -> StoreResult<()> {
        self.set_sealed(true).await
    }

    async fn unseal(&self) -> StoreResult<()> {
        self.set_sealed(false).await
    }

    async fn clear(&self) -> StoreResult<()> {
        let mut tx = self.tx().await?;
        without_statement_timeout(&mut tx).await?;
        self.lock_usage_for_restore(&mut tx).await?;
        for table in ["record_uniques", "records", "collections"] {
            sqlx::query(&format!(
                "DELETE FROM {DATA_SCHEMA}.{table} WHERE tenant_id = $1"
            ))
            .bind(self.tenant.0)
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        }
        sqlx::query(&format!(
            "UPDATE {DATA_SCHEMA}.usage SET records = 0, storage_bytes = 0 WHERE tenant_id = $1"
        ))
        .bind(self.tenant.0)
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)
    }
}
