//! One engine's stores on a fresh database, and the fixtures every case needs.

use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;
use tenantry::audit::NewAuditEntry;
use tenantry::clock::ManualClock;
use tenantry::ids::TenantId;
use tenantry::plan::Plan;
use tenantry::store::migrate::MigratePolicy;
use tenantry::store::postgres::{PgControlStore, PgDataPlane, PgDatabase, PgSettings};
use tenantry::store::sqlite::{SqliteControlStore, SqliteDataPlane};
use tenantry::store::{DataPlane, Store, TenantData};
use tenantry::tenant::{Isolation, Slug, Tenant, TenantStatus};

pub struct Engine {
    pub store: Arc<dyn Store>,
    pub data: Arc<dyn DataPlane>,
    /// Stamps every audit entry the stores append.
    pub clock: Arc<ManualClock>,
    /// The SQLite files (and the name of the PostgreSQL database) live as
    /// long as the engine.
    _dir: TempDir,
}

impl Engine {
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteControlStore::open(&dir.path().join("control.db"), MigratePolicy::Apply)
            .await
            .expect("control store");
        let data = SqliteDataPlane::open(dir.path(), 16, MigratePolicy::Apply)
            .await
            .expect("data plane");
        let clock = start_clock();
        let store = store.with_clock(clock.clone());
        let data = data.with_clock(clock.clone());
        Self::seeded(Arc::new(store), Arc::new(data), clock, dir).await
    }

    pub async fn postgres() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let settings = PgSettings {
            url: tenantry_test_postgres::database_url_for(dir.path()).await,
            runtime_role: "tenantry_app".to_owned(),
            runtime_password: None,
            max_connections: 16,
            acquire_timeout: Duration::from_secs(10),
            statement_timeout: Duration::from_secs(30),
        };
        let db = PgDatabase::open(&settings, MigratePolicy::Apply)
            .await
            .expect("PostgreSQL");
        let data = PgDataPlane::open(&db, Vec::new(), 16)
            .await
            .expect("data plane");
        let clock = start_clock();
        let store = PgControlStore::new(db).with_clock(clock.clone());
        let data = data.with_clock(clock.clone());
        Self::seeded(Arc::new(store), Arc::new(data), clock, dir).await
    }

    async fn seeded(
        store: Arc<dyn Store>,
        data: Arc<dyn DataPlane>,
        clock: Arc<ManualClock>,
        dir: TempDir,
    ) -> Self {
        store.seed_plans(&Plan::builtin()).await.expect("plans");
        Self {
            store,
            data,
            clock,
            _dir: dir,
        }
    }

    /// A live tenant on `isolation`, provisioned.
    pub async fn tenant(&self, slug: &str, isolation: Isolation) -> Tenant {
        let now = Utc::now();
        let tenant = Tenant {
            id: TenantId::new(),
            slug: Slug::parse(slug).expect("slug"),
            name: slug.to_owned(),
            plan: "basic".to_owned(),
            status: TenantStatus::Active,
            isolation,
            organization_id: None,
            domain: None,
            metadata: serde_json::json!({}),
            branding: serde_json::json!({}),
            created_at: now,
            updated_at: now,
            placement: None,
        };
        self.store
            .insert_tenant(&tenant, b"wrapped key", &audit("tenant.create"))
            .await
            .expect("insert tenant");
        self.data.provision(&tenant).await.expect("provision");
        tenant
    }

    pub async fn handle(&self, tenant: &Tenant) -> Arc<dyn TenantData> {
        self.data.handle(tenant).await.expect("handle")
    }
}

/// Far from the system's time, so an entry stamped by the system clock shows.
fn start_clock() -> Arc<ManualClock> {
    let start = DateTime::parse_from_rfc3339("2031-02-03T04:05:06.123456Z").expect("time");
    Arc::new(ManualClock::new(start.with_timezone(&Utc)))
}

/// An audit entry of the tests' one actor.
pub fn audit(action: &str) -> NewAuditEntry {
    NewAuditEntry::new("conformance", "platform", action, "/conformance")
}
