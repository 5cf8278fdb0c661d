//! PostgreSQL: the control store and the shared tier in one database, the
//! dedicated tier in one database per tenant (cloned from a migrated
//! template). The database enforces isolation a second time: every table
//! holding tenant rows has row-level security, enabled and forced, and the
//! server queries through a runtime role that owns nothing and can neither
//! bypass RLS nor change the schema. Schema work (migrations, grants, index
//! DDL, creating and dropping tenant databases) runs on a small pool of the
//! configured (owner) role.

mod audit;
mod control;
mod data;
mod identity;
mod jobs;
mod platform;

pub use control::PgControlStore;
pub use data::PgDataPlane;

use super::migrate::{MigratePolicy, latest_version, must_run};
use super::{StoreError, StoreResult};
use crate::Tenant;
use crate::ids::TenantId;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool, Postgres, Row, Transaction};
use std::str::FromStr;
use std::time::Duration;

static CONTROL_MIGRATIONS: sqlx::migrate::Migrator =
    sqlx::migrate!("./migrations/control/postgres");
static TENANT_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/tenant/postgres");

/// The schema of tenant data, in the main database and in every dedicated one.
pub const DATA_SCHEMA: &str = "tenant_data";

/// How to reach one PostgreSQL server.
#[derive(Clone)]
pub struct PgSettings {
    /// Owner (migration) role and main database; created if missing.
    pub url: String,
    /// The role requests run as; created with LOGIN, NOSUPERUSER, NOBYPASSRLS if missing.
    pub runtime_role: String,
    /// Its password, where the server's authentication needs one.
    pub runtime_password: Option<String>,
    /// Connections of the runtime pool of the main database.
    pub max_connections: u32,
    /// How long a request waits for a connection before it fails with `Unavailable`.
    pub acquire_timeout: Duration,
    /// The runtime role's `statement_timeout`: no statement of a request
    /// holds a connection (and its locks) longer. Work that may take longer
    /// (a purge) lifts it for its own transaction.
    pub statement_timeout: Duration,
}

/// The URL and the runtime password are never printed.
impl std::fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSettings")
            .field("url", &"[redacted]")
            .field("runtime_role", &self.runtime_role)
            .field(
                "runtime_password",
                &self.runtime_password.as_ref().map(|_| "[redacted]"),
            )
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

/// One database as Tenantry uses it: an owner pool for schema work and a
/// runtime pool for everything else.
#[derive(Clone)]
pub struct PgDatabase {
    pub(crate) name: String,
    pub(crate) admin: PgPool,
    pub(crate) runtime: PgPool,
    pub(crate) admin_options: PgConnectOptions,
    pub(crate) settings: PgSettings,
}

impl PgDatabase {
    /// Connects, creating the database and the runtime role if missing, and
    /// brings the control and tenant-data schemas up to date.
    /// `policy` says whether a schema that is behind may be migrated.
    pub async fn open(settings: &PgSettings, policy: MigratePolicy) -> StoreResult<Self> {
        Self::open_with(settings, policy, true).await
    }

    /// A placement server's database: the shared tier's schema only, no control schema.
    pub async fn open_placement(settings: &PgSettings, policy: MigratePolicy) -> StoreResult<Self> {
        Self::open_with(settings, policy, false).await
    }

    async fn open_with(
        settings: &PgSettings,
        policy: MigratePolicy,
        control: bool,
    ) -> StoreResult<Self> {
        let admin_options = PgConnectOptions::from_str(&settings.url)
            .map_err(|e| StoreError::Internal(format!("bad PostgreSQL URL: {e}")))?
            .application_name("tenantry-admin")
            .disable_statement_logging();
        let name = admin_options
            .get_database()
            .unwrap_or("tenantry")
            .to_owned();
        check_identifier(&name)?;
        check_identifier(&settings.runtime_role)?;
        ensure_database(&admin_options, &name, None).await?;
        let admin_options = admin_options.database(&name);
        let mut conn = admin_options.connect().await.map_err(pg_error)?;
        if control {
            migrate_control(&mut conn, policy).await?;
        }
        let what = format!("the shared tenant schema of {name}");
        migrate_tenant_schema(&mut conn, policy, &what).await?;
        ensure_runtime_role(&mut conn, settings).await?;
        grant_runtime(&mut conn, &settings.runtime_role, control).await?;
        conn.close().await.map_err(pg_error)?;

        let admin = PgPoolOptions::new()
            .max_connections(2)
            .min_connections(0)
            .acquire_timeout(settings.acquire_timeout)
            .idle_timeout(Duration::from_secs(60))
            .connect_lazy_with(admin_options.clone());
        let runtime_options = runtime_options(&admin_options, settings, &name);
        let runtime = runtime_pool(runtime_options, settings.max_connections, settings);
        Ok(Self {
            name,
            admin,
            runtime,
            admin_options,
            settings: settings.clone(),
        })
    }

    pub async fn close(&self) {
        self.runtime.close().await;
        self.admin.close().await;
    }
}

/// The runtime role's options for database `db`.
pub(crate) fn runtime_options(
    admin: &PgConnectOptions,
    settings: &PgSettings,
    db: &str,
) -> PgConnectOptions {
    let options = admin
        .clone()
        .username(&settings.runtime_role)
        .database(db)
        .application_name("tenantry")
        .options([(
            "statement_timeout",
            format!("{}ms", settings.statement_timeout.as_millis().max(1)),
        )]);
    match &settings.runtime_password {
        Some(password) => options.password(password),
        None => options,
    }
}

/// A lazily connecting pool of the runtime role. sqlx pings every
/// connection as it is released, so a busy connection is known good; only
/// one idle for a while (a database restart may have cut it since) is
/// pinged again before use. Pinging on every acquire would add a round trip
/// to each request.
pub(crate) fn runtime_pool(options: PgConnectOptions, max: u32, settings: &PgSettings) -> PgPool {
    PgPoolOptions::new()
        .max_connections(max.max(1))
        .min_connections(0)
        .acquire_timeout(settings.acquire_timeout)
        .idle_timeout(Duration::from_secs(60))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > Duration::from_secs(2) {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_lazy_with(options)
}

/// Starts a transaction bound to one tenant: `set_config(…, true)` is
/// `SET LOCAL`, so the setting ends with the transaction and a pooled
/// connection never carries one tenant's context into another's request
/// (commit, rollback, or a dropped transaction alike).
pub(crate) async fn tenant_tx(
    pool: &PgPool,
    tenant: TenantId,
) -> StoreResult<Transaction<'static, Postgres>> {
    // One round trip for both. The id is a UUID we format ourselves (hex
    // and hyphens), never text from a request, so splicing it is safe.
    // Nothing that can fail belongs here: should a statement after BEGIN
    // fail, sqlx 0.8's `begin_with` returns the error without rolling back,
    // and the connection goes back to the pool inside an aborted
    // transaction (every later BEGIN on it fails).
    pool.begin_with(format!(
        "BEGIN; SELECT set_config('tenantry.tenant_id', '{}', true)",
        tenant.0
    ))
    .await
    .map_err(pg_error)
}

/// Switches the tenant of the current transaction (for control-plane work
/// that touches several tenants in one transaction, one after the other).
pub(crate) async fn set_tenant(conn: &mut PgConnection, tenant: TenantId) -> StoreResult<()> {
    sqlx::query("SELECT set_config('tenantry.tenant_id', $1, true)")
        .bind(tenant.0.to_string())
        .execute(conn)
        .await
        .map_err(pg_error)?;
    Ok(())
}

/// Identifiers we splice into DDL (database and role names) are restricted
/// to lower-case letters, digits and underscores.
pub(crate) fn check_identifier(name: &str) -> StoreResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Internal(format!(
            "PostgreSQL name {name:?} must be lower-case letters, digits and underscores"
        )))
    }
}

/// Databases created or dropped at once by this process. Each takes an
/// owner connection of its own to the server's `postgres` database:
/// unbounded, 32 tenants created at once took a server past its
/// `max_connections` beside the pools ("too many clients already").
pub const MAX_DATABASE_CHANGES: usize = 4;

static DATABASE_CHANGES: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(MAX_DATABASE_CHANGES);

/// An owner connection to the `postgres` database, with this process's
/// turn for a database change (held until both are dropped).
async fn maintenance_connection(
    admin: &PgConnectOptions,
) -> StoreResult<(PgConnection, tokio::sync::SemaphorePermit<'static>)> {
    let turn = DATABASE_CHANGES
        .acquire()
        .await
        .map_err(|_| StoreError::Unavailable("database changes are closed".into()))?;
    let conn = admin
        .clone()
        .database("postgres")
        .connect()
        .await
        .map_err(pg_error)?;
    Ok((conn, turn))
}

/// Creates database `name` (from `template` if given) unless it exists.
pub(crate) async fn ensure_database(
    admin: &PgConnectOptions,
    name: &str,
    template: Option<&str>,
) -> StoreResult<()> {
    check_identifier(name)?;
    let (mut conn, _turn) = maintenance_connection(admin).await?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&mut conn)
        .await
        .map_err(pg_error)?;
    if exists.is_none() {
        let sql = match template {
            Some(t) => {
                check_identifier(t)?;
                format!("CREATE DATABASE {name} TEMPLATE {t}")
            }
            None => format!("CREATE DATABASE {name}"),
        };
        // A clone waits while someone (autovacuum, another server's
        // migration) is connected to the template: they leave soon.
        let mut attempt = 0;
        loop {
            match sqlx::query(&sql).execute(&mut conn).await {
                Ok(_) => break,
                // Someone else created it meanwhile (42P04, or 23505 when both
                // reached the catalog at once).
                Err(sqlx::Error::Database(e))
                    if matches!(e.code().as_deref(), Some("42P04") | Some("23505")) =>
                {
                    break;
                }
                Err(sqlx::Error::Database(e))
                    if e.code().as_deref() == Some("55006") && attempt < 10 =>
                {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                }
                Err(e) => return Err(pg_error(e)),
            }
        }
    }
    conn.close().await.map_err(pg_error)
}

/// Drops database `name` if it exists, disconnecting whoever is still on it.
pub(crate) async fn drop_database(admin: &PgConnectOptions, name: &str) -> StoreResult<()> {
    check_identifier(name)?;
    let (mut conn, _turn) = maintenance_connection(admin).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await
        .map_err(pg_error)?;
    conn.close().await.map_err(pg_error)
}

/// The tenant-data schema version of a migrated database.
pub(crate) fn tenant_schema_version() -> i64 {
    latest_version(&TENANT_MIGRATIONS)
}

pub(crate) async fn migrate_control(
    conn: &mut PgConnection,
    policy: MigratePolicy,
) -> StoreResult<()> {
    if must_run(
        &CONTROL_MIGRATIONS,
        &mut *conn,
        policy,
        "the control schema",
    )
    .await?
    {
        CONTROL_MIGRATIONS
            .run_direct(&mut *conn)
            .await
            .map_err(|e| StoreError::Internal(format!("migrating the control schema: {e}")))?;
    }
    Ok(())
}

/// Migrates schema `tenant_data` of the connected database. The migrator
/// runs with that schema first on the search path, so its bookkeeping table
/// is the schema's own and never mixes with the control schema's.
pub(crate) async fn migrate_tenant_schema(
    conn: &mut PgConnection,
    policy: MigratePolicy,
    what: &str,
) -> StoreResult<()> {
    for sql in [
        "CREATE SCHEMA IF NOT EXISTS tenant_data",
        "SET search_path TO tenant_data",
    ] {
        sqlx::query(sql)
            .execute(&mut *conn)
            .await
            .map_err(pg_error)?;
    }
    let mut migrated = must_run(&TENANT_MIGRATIONS, &mut *conn, policy, what).await;
    if let Ok(true) = migrated {
        migrated = TENANT_MIGRATIONS
            .run_direct(&mut *conn)
            .await
            .map(|()| true)
            .map_err(|e| StoreError::Internal(format!("migrating {what}: {e}")));
    }
    sqlx::query("RESET search_path")
        .execute(&mut *conn)
        .await
        .map_err(pg_error)?;
    migrated.map(drop)
}

/// Creates the runtime role if missing, and refuses one that could bypass
/// row-level security.
async fn ensure_runtime_role(conn: &mut PgConnection, settings: &PgSettings) -> StoreResult<()> {
    let role = &settings.runtime_role;
    let existing: Option<(bool, bool)> =
        sqlx::query_as("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1")
            .bind(role)
            .fetch_optional(&mut *conn)
            .await
            .map_err(pg_error)?;
    let owner_member: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)
                AND ($1 = current_user OR pg_has_role($1, current_user, 'MEMBER'))",
    )
    .bind(role)
    .fetch_one(&mut *conn)
    .await
    .map_err(pg_error)?;
    if owner_member {
        return Err(StoreError::Internal(format!(
            "runtime role {role} is (or is a member of) the owner role of the database URL; it could switch row-level security off"
        )));
    }
    match existing {
        Some((false, false)) => {}
        Some(_) => {
            return Err(StoreError::Internal(format!(
                "runtime role {role} is a superuser or has BYPASSRLS; row-level security would not apply to it"
            )));
        }
        None => {
            let create =
                format!("CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE");
            match sqlx::query(&create).execute(&mut *conn).await {
                Ok(_) => {}
                // Created concurrently (another server or test): fine.
                Err(sqlx::Error::Database(e))
                    if matches!(e.code().as_deref(), Some("42710") | Some("23505")) => {}
                Err(e) => return Err(pg_error(e)),
            }
        }
    }
    if let Some(password) = &settings.runtime_password {
        let sql: String = sqlx::query_scalar("SELECT format('ALTER ROLE %I PASSWORD %L', $1, $2)")
            .bind(role)
            .bind(password)
            .fetch_one(&mut *conn)
            .await
            .map_err(pg_error)?;
        sqlx::query(&sql)
            .execute(&mut *conn)
            .await
            .map_err(pg_error)?;
    }
    Ok(())
}

/// The runtime role may read and write rows, nothing more; the audit log is
/// append-only even for it. `control` says whether this database holds the
/// control schema too (the main database) or tenant data alone.
pub(crate) async fn grant_runtime(
    conn: &mut PgConnection,
    role: &str,
    control: bool,
) -> StoreResult<()> {
    let mut statements = vec![
        format!("GRANT USAGE ON SCHEMA {DATA_SCHEMA} TO {role}"),
        format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {DATA_SCHEMA} TO {role}"
        ),
        format!("REVOKE ALL ON {DATA_SCHEMA}._sqlx_migrations FROM {role}"),
        format!("REVOKE UPDATE, DELETE ON {DATA_SCHEMA}.audit_log FROM {role}"),
    ];
    if control {
        statements.extend([
            format!("GRANT USAGE ON SCHEMA public TO {role}"),
            format!(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"
            ),
            format!("REVOKE UPDATE, DELETE ON public.audit_log FROM {role}"),
            format!("REVOKE UPDATE, DELETE ON public.platform_audit FROM {role}"),
            format!("REVOKE ALL ON public._sqlx_migrations FROM {role}"),
        ]);
    }
    for sql in statements {
        sqlx::query(&sql)
            .execute(&mut *conn)
            .await
            .map_err(pg_error)?;
    }
    Ok(())
}

/// `NotFound` unless the tenant is live, inside the caller's transaction.
/// `FOR SHARE` holds the tenant row until commit: a deletion's update of it
/// waits for this write, and a write after the deletion sees `deleting` and
/// is refused, so a racing write never recreates a row the purge removes.
pub(super) async fn require_live(conn: &mut PgConnection, t: &Tenant) -> StoreResult<()> {
    let live: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM tenants WHERE id = $1 AND status IN ('active', 'suspended') FOR SHARE",
    )
    .bind(t.id.0)
    .fetch_optional(&mut *conn)
    .await
    .map_err(pg_error)?;
    live.map(|_| ()).ok_or(StoreError::NotFound)
}

/// One column of a row, decoding failures mapped like any other store error.
pub(super) fn col<'r, T>(row: &'r PgRow, name: &str) -> StoreResult<T>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    row.try_get(name).map_err(pg_error)
}

/// A `bigint` count as `u64` (negative values cannot happen; clamp anyway).
pub(super) fn count(n: i64) -> u64 {
    n.max(0) as u64
}

/// Maps sqlx errors once: uniqueness → `Conflict(field)`, a database that
/// cannot be reached, is shutting down or is out of connections →
/// `Unavailable`.
pub(crate) fn pg_error(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(super::conflict_field(db.constraint()))
        }
        // The tenant's own database was dropped (purged, or moved away).
        sqlx::Error::Database(db) if db.code().as_deref() == Some("3D000") => StoreError::Absent,
        sqlx::Error::Database(db)
            if db.code().is_some_and(|c| {
                // 08: connection exception; 57P: operator intervention
                // (shutdown, crash, cannot connect now); 53: out of resources
                // (connections, memory, disk); 40001/40P01: serialization
                // failure or deadlock; 55P03: lock not available; 57014:
                // statement cancelled or timed out. All worth a retry.
                c.starts_with("08")
                    || c.starts_with("57P")
                    || c.starts_with("53")
                    || matches!(c.as_ref(), "40001" | "40P01" | "55P03" | "57014")
            }) =>
        {
            StoreError::Unavailable(e.to_string())
        }
        sqlx::Error::PoolTimedOut
        | sqlx::Error::Io(_)
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_) => StoreError::Unavailable(e.to_string()),
        _ => StoreError::Internal(e.to_string()),
    }
}

#[cfg(test)]
mod settings_tests {
    use super::*;

    #[test]
    fn settings_never_print_the_url_or_the_password() {
        let settings = PgSettings {
            url: "postgres://owner:db-s3cret@h/app".into(),
            runtime_role: "tenantry_app".into(),
            runtime_password: Some("rt-s3cret".into()),
            max_connections: 4,
            acquire_timeout: Duration::from_secs(1),
            statement_timeout: Duration::from_secs(1),
        };
        let shown = format!("{settings:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("tenantry_app"), "{shown}");
    }
}
