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

mod record_write;
mod registry;
mod sql;
mod tenant;
mod write;

use super::{PgDatabase, grant_runtime, migrate_tenant_schema, pg_error, tenant_schema_version};
use crate::Tenant;
use crate::clock::{Clock, SystemClock};
use crate::ids::TenantId;
use crate::placement::Server;
use crate::store::data::{DataPlane, TenantData};
use crate::store::migrate::MigratePolicy;
use crate::store::{StoreError, StoreResult};
use async_trait::async_trait;
use registry::PgServer;
use sqlx::{ConnectOptions, Connection};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

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
    /// Stamps the data chains' entries.
    clock: Arc<dyn Clock>,
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
            clock: Arc::new(SystemClock),
        })
    }

    /// Audit entries stamped by `clock` (the system clock by default).
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        Self { clock, ..self }
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
        self.server(tenant)?
            .handle(tenant, self.clock.clone())
            .await
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
