//! The embedded default: the control store in one SQLite file (WAL mode).

mod audit;
mod data;
mod direct;
mod identity;

pub use data::SqliteDataPlane;

use super::migrate::{MigratePolicy, must_run};
use super::{
    ConfigEntry, ControlImport, ControlStore, Organization, PageRequest, PlatformUser, StoreError,
    StoreResult, TenantChange, TenantFilter, decode, isolation, outcome_columns, page_limit,
    substring_pattern,
};
use crate::Role;
use crate::audit::{AuditChain, NewAuditEntry};
use crate::ids::{JobId, OrgId, TenantId, UserId};
use crate::job::{Claim, Job, JobFilter, JobKind, JobOutcome, JobStatus};
use crate::plan::Plan;
use crate::tenant::{Slug, Tenant, TenantStatus};
use async_trait::async_trait;
use audit::ChainAt;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/control/sqlite");

/// The SQLite control store.
#[derive(Clone)]
pub struct SqliteControlStore {
    pool: SqlitePool,
}

/// Every commit is on disk before it is acknowledged. In WAL mode `NORMAL`
/// syncs only at checkpoints, so a power cut could lose the last commits a
/// client was told succeeded; `FULL` syncs the WAL at each commit (group
/// commit on the shared writer shares one sync among its batch).
pub(super) const SYNCHRONOUS: SqliteSynchronous = SqliteSynchronous::Full;

impl SqliteControlStore {
    /// Opens (creating if needed) the database file; `policy` says whether
    /// a schema that is behind may be migrated.
    pub async fn open(path: &Path, policy: MigratePolicy) -> StoreResult<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SYNCHRONOUS)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(db_error)?;
        let mut conn = pool.acquire().await.map_err(db_error)?;
        if must_run(&MIGRATIONS, &mut *conn, policy, "the control store").await? {
            MIGRATIONS
                .run_direct(&mut *conn)
                .await
                .map_err(|e| StoreError::Internal(format!("migrating control store: {e}")))?;
        }
        drop(conn);
        Ok(Self { pool })
    }

    /// One live tenant by a unique column; `condition` is a fixed fragment of ours.
    async fn live_tenant_where(
        &self,
        condition: &'static str,
        value: String,
    ) -> StoreResult<Option<Tenant>> {
        sqlx::query(&format!(
            "SELECT * FROM tenants WHERE {condition} AND status IN ('active', 'suspended')"
        ))
        .bind(value)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?
        .as_ref()
        .map(tenant_from_row)
        .transpose()
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// `NotFound` unless the tenant is live, checked inside the write
/// transaction (`BEGIN IMMEDIATE` serialises it with the deletion's): a
/// write racing a deletion never recreates a row the purge removes.
pub(super) async fn require_live(
    tx: &mut sqlx::Transaction<'static, Sqlite>,
    t: &Tenant,
) -> StoreResult<()> {
    let live: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM tenants WHERE id = ? AND status IN ('active', 'suspended')",
    )
    .bind(t.id.to_string())
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_error)?;
    live.map(|_| ()).ok_or(StoreError::NotFound)
}

fn job_from_row(row: &SqliteRow) -> StoreResult<Job> {
    let kind: String = row.try_get("kind").map_err(db_error)?;
    let status: String = row.try_get("status").map_err(db_error)?;
    let attempts: i64 = row.try_get("attempts").map_err(db_error)?;
    Ok(Job {
        id: uuid_col(row, "id")?,
        tenant_id: uuid_col(row, "tenant_id")?,
        kind: decode(&kind, JobKind::parse, "job kind")?,
        status: decode(&status, JobStatus::parse, "job status")?,
        progress: row.try_get("progress").map_err(db_error)?,
        params: json_col(row, "params")?,
        state: json_col(row, "state")?,
        result_url: row.try_get("result_url").map_err(db_error)?,
        error: row.try_get("error").map_err(db_error)?,
        attempts: u32::try_from(attempts.max(0)).unwrap_or(u32::MAX),
        heartbeat_at: row.try_get("heartbeat_at").map_err(db_error)?,
        worker: row.try_get("worker").map_err(db_error)?,
        node: row.try_get("node").map_err(db_error)?,
        run_after: row.try_get("run_after").map_err(db_error)?,
        created_by: row.try_get("created_by").map_err(db_error)?,
        created_at: row.try_get("created_at").map_err(db_error)?,
        updated_at: row.try_get("updated_at").map_err(db_error)?,
    })
}

/// Inserts a queued job on the open transaction; the partial unique index
/// refuses a second unfinished job of one tenant.
async fn insert_job_row(tx: &mut sqlx::Transaction<'static, Sqlite>, j: &Job) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO jobs (id, tenant_id, kind, status, progress, params, state, result_url, error, attempts,
                           heartbeat_at, worker, node, run_after, created_by, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(j.id.to_string())
    .bind(j.tenant_id.to_string())
    .bind(j.kind.as_str())
    .bind(j.status.as_str())
    .bind(j.progress)
    .bind(to_json(&j.params)?)
    .bind(to_json(&j.state)?)
    .bind(&j.result_url)
    .bind(&j.error)
    .bind(i64::from(j.attempts))
    .bind(j.heartbeat_at)
    .bind(&j.worker)
    .bind(&j.node)
    .bind(j.run_after)
    .bind(&j.created_by)
    .bind(j.created_at)
    .bind(j.updated_at)
    .execute(&mut **tx)
    .await
    .map_err(|e| match db_error(e) {
        StoreError::Conflict(_) => StoreError::Conflict("job".into()),
        other => other,
    })?;
    Ok(())
}

/// The tenant's chain in the control store.
fn control_chain(t: &Tenant) -> ChainAt {
    ChainAt::tenant(AuditChain::Control, t.id)
}

/// Starts a write transaction. `BEGIN IMMEDIATE` takes the write lock up
/// front, so a transaction that reads before it writes cannot fail on the
/// read-to-write upgrade; the `Transaction` rolls back if it is dropped
/// unfinished (a cancelled request never leaves a pooled connection inside
/// an open transaction).
pub(super) async fn begin_write(
    pool: &SqlitePool,
) -> StoreResult<sqlx::Transaction<'static, Sqlite>> {
    pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)
}

/// Maps sqlx errors once: uniqueness → `Conflict(field)`, pool/IO → `Unavailable`.
pub(super) fn db_error(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            // SQLite says "UNIQUE constraint failed: tenants.slug"; partial
            // indexes report "index 'tenants_slug'". Either way, name the field.
            let msg = db.message();
            let field = msg
                .rsplit(['.', '_', '\''])
                .find(|s| !s.is_empty())
                .unwrap_or("id")
                .to_owned();
            StoreError::Conflict(field)
        }
        // Busy or locked past the busy timeout, or the disk full: the
        // database is fine and a retry later may well succeed (a 503).
        sqlx::Error::Database(db)
            if db
                .code()
                .and_then(|c| c.parse::<i32>().ok())
                .is_some_and(|c| TRANSIENT_CODES.contains(&(c & 0xff))) =>
        {
            StoreError::Unavailable(e.to_string())
        }
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Internal(e.to_string()),
    }
}

/// SQLite's primary result codes for conditions that pass: BUSY, LOCKED, FULL.
const TRANSIENT_CODES: [i32; 3] = [5, 6, 13];

fn json_col(row: &SqliteRow, col: &str) -> StoreResult<serde_json::Value> {
    let text: String = row.try_get(col).map_err(db_error)?;
    serde_json::from_str(&text).map_err(|e| StoreError::Internal(format!("bad json in {col}: {e}")))
}

pub(super) fn uuid_col<T: FromStr>(row: &SqliteRow, col: &str) -> StoreResult<T> {
    let text: String = row.try_get(col).map_err(db_error)?;
    text.parse()
        .map_err(|_| StoreError::Internal(format!("bad id in {col}: {text:?}")))
}

pub(super) fn opt_uuid_col<T: FromStr>(row: &SqliteRow, col: &str) -> StoreResult<Option<T>> {
    let text: Option<String> = row.try_get(col).map_err(db_error)?;
    text.map(|t| {
        t.parse()
            .map_err(|_| StoreError::Internal(format!("bad id in {col}: {t:?}")))
    })
    .transpose()
}

fn tenant_from_row(row: &SqliteRow) -> StoreResult<Tenant> {
    let slug: String = row.try_get("slug").map_err(db_error)?;
    let status: String = row.try_get("status").map_err(db_error)?;
    let iso: String = row.try_get("isolation").map_err(db_error)?;
    Ok(Tenant {
        id: uuid_col(row, "id")?,
        slug: Slug::parse_allowing_reserved(&slug)
            .map_err(|e| StoreError::Internal(format!("bad slug in store: {e}")))?,
        name: row.try_get("name").map_err(db_error)?,
        plan: row.try_get("plan").map_err(db_error)?,
        status: decode(&status, TenantStatus::parse, "status")?,
        isolation: isolation(&iso)?,
        organization_id: opt_uuid_col(row, "organization_id")?,
        domain: row.try_get("domain").map_err(db_error)?,
        metadata: json_col(row, "metadata")?,
        branding: json_col(row, "branding")?,
        created_at: row.try_get("created_at").map_err(db_error)?,
        updated_at: row.try_get("updated_at").map_err(db_error)?,
        placement: row.try_get("placement").map_err(db_error)?,
    })
}

fn platform_user_from_row(row: &SqliteRow) -> StoreResult<PlatformUser> {
    let role: String = row.try_get("role").map_err(db_error)?;
    Ok(PlatformUser {
        id: uuid_col(row, "id")?,
        email: row.try_get("email").map_err(db_error)?,
        name: row.try_get("name").map_err(db_error)?,
        password_hash: row.try_get("password_hash").map_err(db_error)?,
        role: decode(&role, Role::parse, "role")?,
        organization_id: opt_uuid_col(row, "organization_id")?,
        created_at: row.try_get("created_at").map_err(db_error)?,
    })
}

fn org_from_row(row: &SqliteRow) -> StoreResult<Organization> {
    Ok(Organization {
        id: uuid_col(row, "id")?,
        name: row.try_get("name").map_err(db_error)?,
        description: row.try_get("description").map_err(db_error)?,
        created_at: row.try_get("created_at").map_err(db_error)?,
    })
}

fn plan_from_row(row: &SqliteRow) -> StoreResult<Plan> {
    serde_json::from_value(json_col(row, "body")?)
        .map_err(|e| StoreError::Internal(format!("bad plan in store: {e}")))
}

fn config_from_row(row: &SqliteRow) -> StoreResult<ConfigEntry> {
    Ok(ConfigEntry {
        key: row.try_get("key").map_err(db_error)?,
        value: json_col(row, "value")?,
        encrypted: row.try_get("encrypted").map_err(db_error)?,
        updated_at: row.try_get("updated_at").map_err(db_error)?,
    })
}

fn to_json(v: &impl serde::Serialize) -> StoreResult<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Internal(e.to_string()))
}

#[async_trait]
impl ControlStore for SqliteControlStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn insert_platform_user(&self, u: &PlatformUser, a: &NewAuditEntry) -> StoreResult<()> {
        let mut tx = begin_write(&self.pool).await?;
        sqlx::query(
            "INSERT INTO platform_users (id, email, name, password_hash, role, organization_id, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(u.id.to_string())
        .bind(&u.email)
        .bind(&u.name)
        .bind(&u.password_hash)
        .bind(u.role.as_str())
        .bind(u.organization_id.map(|o| o.to_string()))
        .bind(u.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| match db_error(e) {
            StoreError::Conflict(_) => StoreError::Conflict("email".into()),
            other => other,
        })?;
        audit::append(&mut tx, &ChainAt::platform(), a).await?;
        tx.commit().await.map_err(db_error)
    }

    async fn platform_user_by_email(&self, email: &str) -> StoreResult<Option<PlatformUser>> {
        sqlx::query("SELECT * FROM platform_users WHERE lower(email) = lower(?)")
            .bind(email)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?
            .as_ref()
            .map(platform_user_from_row)
            .transpose()
    }

    async fn platform_user(&self, id: UserId) -> StoreResult<Option<PlatformUser>> {
        sqlx::query("SELECT * FROM platform_users WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?
            .as_ref()
            .map(platform_user_from_row)
            .transpose()
    }

    async fn count_super_admins(&self) -> StoreResult<u64> {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM platform_users WHERE role = 'super_admin'")
                .fetch_one(&self.pool)
                .await
                .map_err(db_error)?;
        Ok(n.max(0) as u64)
    }

    async fn list_plans(&self) -> StoreResult<Vec<Plan>> {
        sqlx::query("SELECT body FROM plans ORDER BY code")
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?
            .iter()
            .map(plan_from_row)
            .collect()
    }

    async fn plan(&self, code: &str) -> StoreResult<Option<Plan>> {
        sqlx::query("SELECT body FROM plans WHERE code = ?")
            .bind(code)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?
            .as_ref()
            .map(plan_from_row)
            .transpose()
    }

    async fn upsert_plan(&self, plan: &Plan, a: &NewAuditEntry) -> StoreResult<bool> {
        let mut tx = begin_write(&self.pool).await?;
        let existed: Option<i64> = sqlx::query_scalar("SELECT 1 FROM plans WHERE code = ?")
            .bind(&plan.code)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
        sqlx::query("INSERT INTO plans (code, body) VALUES (?, ?) ON CONFLICT (code) DO UPDATE SET body = excluded.body")
            .bind(&plan.code)
            .bind(to_json(plan)?)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        audit::append(&mut tx, &ChainAt::platform(), a).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(existed.is_none())
    }

    async fn seed_plans(&self, plans: &[Plan]) -> StoreResult<()> {
        for plan in plans {
            sqlx::query(
                "INSERT INTO plans (code, body) VALUES (?, ?) ON CONFLICT (code) DO NOTHING",
            )
            .bind(&plan.code)
            .bind(to_json(plan)?)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        }
        Ok(())
    }

    async fn insert_org(&self, org: &Organization, a: &NewAuditEntry) -> StoreResult<()> {
        let mut tx = begin_write(&self.pool).await?;
        sqlx::query(
            "INSERT INTO organizations (id, name, description, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(org.id.to_string())
        .bind(&org.name)
        .bind(&org.description)
        .bind(org.created_at)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        audit::append(&mut tx, &ChainAt::platform(), a).await?;
        tx.commit().await.map_err(db_error)
    }

    async fn org(&self, id: OrgId) -> StoreResult<Option<Organization>> {
        sqlx::query("SELECT * FROM organizations WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?
            .as_ref()
            .map(org_from_row)
            .transpose()
    }

    async fn list_orgs(
        &self,
        only: Option<OrgId>,
        page: &PageRequest,
    ) -> StoreResult<Vec<Organization>> {
        let mut q = QueryBuilder::<Sqlite>::new("SELECT * FROM organizations WHERE 1 = 1");
        if let Some(only) = only {
            q.push(" AND id = ").push_bind(only.to_string());
        }
        if let Some(after) = page.after {
            q.push(" AND id > ").push_bind(after.to_string());
        }
        q.push(" ORDER BY id LIMIT ").push_bind(page_limit(page));
        q.build()
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?
            .iter()
            .map(org_from_row)
            .collect()
    }

    async fn insert_tenant(
        &self,
        t: &Tenant,
        wrapped_key: &[u8],
        a: &NewAuditEntry,
    ) -> StoreResult<()> {
        let mut tx = begin_write(&self.pool).await?;
        sqlx::query(
            "INSERT INTO tenants (id, slug, name, plan, status, isolation, organization_id, domain,
                                  metadata, branding, created_at, updated_at, schema_version, placement)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(t.id.to_string())
        .bind(t.slug.as_str())
        .bind(&t.name)
        .bind(&t.plan)
        .bind(t.status.as_str())
        .bind(t.isolation.as_str())
        .bind(t.organization_id.map(|o| o.to_string()))
        .bind(&t.domain)
        .bind(to_json(&t.metadata)?)
        .bind(to_json(&t.branding)?)
        .bind(t.created_at)
        .bind(t.updated_at)
        .bind(data::tenant_schema_version())
        .bind(&t.placement)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        sqlx::query("INSERT INTO tenant_keys (tenant_id, wrapped_key) VALUES (?, ?)")
            .bind(t.id.to_string())
            .bind(wrapped_key)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        audit::append(&mut tx, &control_chain(t), a).await?;
        tx.commit().await.map_err(db_error)
    }

    async fn tenant_by_id(&self, id: TenantId) -> StoreResult<Option<Tenant>> {
        self.live_tenant_where("id = ?", id.to_string()).await
    }

    async fn tenant_any(&self, id: TenantId) -> StoreResult<Option<Tenant>> {
        sqlx::query("SELECT * FROM tenants WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?
            .as_ref()
            .map(tenant_from_row)
            .transpose()
    }

    async fn tenant_by_slug(&self, slug: &str) -> StoreResult<Option<Tenant>> {
        self.live_tenant_where("slug = ?", slug.to_owned()).await
    }

    async fn tenant_by_domain(&self, domain: &str) -> StoreResult<Option<Tenant>> {
        self.live_tenant_where("domain = ?", domain.to_owned())
            .await
    }

    async fn list_tenants(&self, f: &TenantFilter, page: &PageRequest) -> StoreResult<Vec<Tenant>> {
        let mut q = QueryBuilder::<Sqlite>::new("SELECT * FROM tenants WHERE 1 = 1");
        match f.status {
            Some(status) => {
                q.push(" AND status = ").push_bind(status.as_str());
            }
            None => {
                q.push(" AND status <> 'deleted'");
            }
        }
        if let Some(plan) = &f.plan {
            q.push(" AND plan = ").push_bind(plan.clone());
        }
        if let Some(org) = f.organization_id {
            q.push(" AND organization_id = ").push_bind(org.to_string());
        }
        if let Some(text) = &f.q {
            let pattern = substring_pattern(text);
            q.push(" AND (lower(name) LIKE ")
                .push_bind(pattern.clone())
                .push(" ESCAPE '\\' OR slug LIKE ")
                .push_bind(pattern)
                .push(" ESCAPE '\\')");
        }
        if let Some(after) = page.after {
            q.push(" AND id > ").push_bind(after.to_string());
        }
        q.push(" ORDER BY id LIMIT ").push_bind(page_limit(page));
        q.build()
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?
            .iter()
            .map(tenant_from_row)
            .collect()
    }

    async fn change_tenant(
        &self,
        id: TenantId,
        c: &TenantChange,
        a: &NewAuditEntry,
    ) -> StoreResult<Tenant> {
        // Status is not written here (see `set_tenant_status`), so a PATCH
        // racing a suspension cannot undo it; a deleted tenant stays deleted.
        let mut tx = begin_write(&self.pool).await?;
        let row = sqlx::query(
            "UPDATE tenants SET slug = COALESCE(?1, slug), name = COALESCE(?2, name),
                    plan = COALESCE(?3, plan), domain = CASE WHEN ?4 THEN ?5 ELSE domain END,
                    metadata = COALESCE(?6, metadata), branding = COALESCE(?7, branding),
                    updated_at = ?8
             WHERE id = ?9 AND status IN ('active', 'suspended')
             RETURNING *",
        )
        .bind(c.slug.as_ref().map(|s| s.as_str()))
        .bind(&c.name)
        .bind(&c.plan)
        .bind(c.domain.is_some())
        .bind(c.domain.clone().flatten())
        .bind(c.metadata.as_ref().map(to_json).transpose()?)
        .bind(c.branding.as_ref().map(to_json).transpose()?)
        .bind(c.updated_at)
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?
        .ok_or(StoreError::NotFound)?;
        let tenant = tenant_from_row(&row)?;
        audit::append(&mut tx, &control_chain(&tenant), a).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(tenant)
    }

    async fn set_tenant_status(
        &self,
        t: &Tenant,
        status: TenantStatus,
        a: &NewAuditEntry,
    ) -> StoreResult<()> {
        let mut tx = begin_write(&self.pool).await?;
        let done = sqlx::query(
            "UPDATE tenants SET status = ?, updated_at = ? WHERE id = ? AND status IN ('active', 'suspended')",
        )
        .bind(status.as_str())
        .bind(chrono::Utc::now())
        .bind(t.id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        audit::append(&mut tx, &control_chain(t), a).await?;
        tx.commit().await.map_err(db_error)
    }

    async fn mark_tenant_deleting(
        &self,
        t: &Tenant,
        job: &Job,
        a: &NewAuditEntry,
    ) -> StoreResult<()> {
        let id = t.id.to_string();
        let mut tx = begin_write(&self.pool).await?;
        let running: Option<String> =
            // A job that has started (running, or queued again after an
            // interrupted run) may have work to undo: it finishes first.
            sqlx::query_scalar(
                "SELECT id FROM jobs WHERE tenant_id = ?
                 AND (status = 'running' OR (status = 'queued' AND attempts > 0))",
            )
                .bind(&id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
        if running.is_some() {
            return Err(StoreError::Conflict("job".into()));
        }
        let done = sqlx::query(
            "UPDATE tenants SET status = 'deleting', updated_at = ? WHERE id = ? AND status IN ('active', 'suspended')",
        )
        .bind(job.created_at)
        .bind(&id)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        sqlx::query(
            "UPDATE jobs SET status = 'failed', error = 'cancelled: the tenant is being deleted', updated_at = ?
             WHERE tenant_id = ? AND status = 'queued' AND attempts = 0",
        )
        .bind(job.created_at)
        .bind(&id)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        insert_job_row(&mut tx, job).await?;
        audit::append(&mut tx, &control_chain(t), a).await?;
        tx.commit().await.map_err(db_error)
    }

    async fn purge_tenant(&self, t: &Tenant, a: &NewAuditEntry) -> StoreResult<()> {
        let id = t.id.to_string();
        let mut tx = begin_write(&self.pool).await?;
        for sql in [
            "DELETE FROM tenant_config WHERE tenant_id = ?",
            "DELETE FROM request_counts WHERE tenant_id = ?",
            "DELETE FROM refresh_tokens WHERE tenant_id = ?",
            "DELETE FROM otp_codes WHERE tenant_id = ?",
            "DELETE FROM users WHERE tenant_id = ?",
            "DELETE FROM tenant_keys WHERE tenant_id = ?",
            "UPDATE tenants SET status = 'deleted', domain = NULL, metadata = '{}', branding = '{}',
                    updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ? AND status = 'deleting'",
        ] {
            sqlx::query(sql).bind(&id).execute(&mut *tx).await.map_err(db_error)?;
        }
        audit::append(&mut tx, &control_chain(t), a).await?;
        tx.commit().await.map_err(db_error)
    }

    async fn relocate_tenant(
        &self,
        from: &Tenant,
        to: &Tenant,
        a: &NewAuditEntry,
    ) -> StoreResult<()> {
        let mut tx = begin_write(&self.pool).await?;
        let done = sqlx::query(
            "UPDATE tenants SET isolation = ?, placement = ?, schema_version = ?, updated_at = ?
             WHERE id = ? AND status IN ('active', 'suspended') AND isolation = ? AND placement IS ?",
        )
        .bind(to.isolation.as_str())
        .bind(&to.placement)
        .bind(data::tenant_schema_version())
        .bind(to.updated_at)
        .bind(from.id.to_string())
        .bind(from.isolation.as_str())
        .bind(&from.placement)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        audit::append(&mut tx, &control_chain(from), a).await?;
        tx.commit().await.map_err(db_error)
    }

    async fn tenant_wrapped_key(&self, t: &Tenant) -> StoreResult<Vec<u8>> {
        sqlx::query_scalar("SELECT wrapped_key FROM tenant_keys WHERE tenant_id = ?")
            .bind(t.id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?
            .ok_or_else(|| StoreError::Internal(format!("tenant {} has no data key", t.id)))
    }

    async fn placement_counts(&self) -> StoreResult<Vec<(Option<String>, u64)>> {
        let rows: Vec<(Option<String>, i64)> = sqlx::query_as(
            "SELECT placement, count(*) FROM tenants WHERE status <> 'deleted' GROUP BY placement",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(rows
            .into_iter()
            .map(|(p, n)| (p, n.max(0) as u64))
            .collect())
    }

    async fn dedicated_behind(&self, version: i64) -> StoreResult<Vec<Tenant>> {
        sqlx::query(
            "SELECT * FROM tenants WHERE isolation = 'dedicated' AND status <> 'deleted'
             AND schema_version < ? ORDER BY id",
        )
        .bind(version)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?
        .iter()
        .map(tenant_from_row)
        .collect()
    }

    async fn set_schema_version(&self, t: &Tenant, version: i64) -> StoreResult<()> {
        sqlx::query("UPDATE tenants SET schema_version = ? WHERE id = ?")
            .bind(version)
            .bind(t.id.to_string())
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn add_request_counts(
        &self,
        counts: &[(TenantId, chrono::NaiveDate, u64)],
    ) -> StoreResult<Vec<(TenantId, chrono::NaiveDate, u64)>> {
        let mut totals = Vec::with_capacity(counts.len());
        let mut tx = begin_write(&self.pool).await?;
        for (tenant, day, n) in counts {
            // Counts of a tenant deleted since are dropped, not written back.
            let total: Option<i64> = sqlx::query_scalar(
                "INSERT INTO request_counts (tenant_id, day, requests)
                 SELECT ?1, ?2, ?3
                 WHERE EXISTS (SELECT 1 FROM tenants WHERE id = ?1 AND status IN ('active', 'suspended'))
                 ON CONFLICT (tenant_id, day) DO UPDATE SET requests = requests + excluded.requests
                 RETURNING requests",
            )
            .bind(tenant.to_string())
            .bind(day.to_string())
            .bind(i64::try_from(*n).unwrap_or(i64::MAX))
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
            if let Some(total) = total {
                totals.push((*tenant, *day, total.max(0) as u64));
            }
        }
        tx.commit().await.map_err(db_error)?;
        Ok(totals)
    }

    async fn request_counts(
        &self,
        t: &Tenant,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    ) -> StoreResult<Vec<(chrono::NaiveDate, u64)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT day, requests FROM request_counts WHERE tenant_id = ? AND day >= ? AND day <= ? ORDER BY day",
        )
        .bind(t.id.to_string())
        .bind(from.to_string())
        .bind(to.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.into_iter()
            .map(|(day, n)| {
                let day = day.parse().map_err(|_| {
                    StoreError::Internal(format!("bad day in request_counts: {day:?}"))
                })?;
                Ok((day, n.max(0) as u64))
            })
            .collect()
    }

    async fn list_config(&self, t: &Tenant) -> StoreResult<Vec<ConfigEntry>> {
        sqlx::query("SELECT * FROM tenant_config WHERE tenant_id = ? ORDER BY key")
            .bind(t.id.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?
            .iter()
            .map(config_from_row)
            .collect()
    }

    async fn config(&self, t: &Tenant, key: &str) -> StoreResult<Option<ConfigEntry>> {
        sqlx::query("SELECT * FROM tenant_config WHERE tenant_id = ? AND key = ?")
            .bind(t.id.to_string())
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?
            .as_ref()
            .map(config_from_row)
            .transpose()
    }

    async fn put_config(&self, t: &Tenant, e: &ConfigEntry, a: &NewAuditEntry) -> StoreResult<()> {
        let mut tx = begin_write(&self.pool).await?;
        require_live(&mut tx, t).await?;
        sqlx::query(
            "INSERT INTO tenant_config (tenant_id, key, value, encrypted, updated_at) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (tenant_id, key) DO UPDATE
             SET value = excluded.value, encrypted = excluded.encrypted, updated_at = excluded.updated_at",
        )
        .bind(t.id.to_string())
        .bind(&e.key)
        .bind(to_json(&e.value)?)
        .bind(e.encrypted)
        .bind(e.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        audit::append(&mut tx, &control_chain(t), a).await?;
        tx.commit().await.map_err(db_error)
    }

    async fn delete_config(&self, t: &Tenant, key: &str, a: &NewAuditEntry) -> StoreResult<bool> {
        let mut tx = begin_write(&self.pool).await?;
        let done = sqlx::query("DELETE FROM tenant_config WHERE tenant_id = ? AND key = ?")
            .bind(t.id.to_string())
            .bind(key)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let deleted = done.rows_affected() > 0;
        if deleted {
            audit::append(&mut tx, &control_chain(t), a).await?;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(deleted)
    }
    async fn insert_job(&self, t: &Tenant, job: &Job, a: &NewAuditEntry) -> StoreResult<()> {
        let mut tx = begin_write(&self.pool).await?;
        require_live(&mut tx, t).await?;
        insert_job_row(&mut tx, job).await?;
        audit::append(&mut tx, &control_chain(t), a).await?;
        tx.commit().await.map_err(db_error)
    }

    async fn job(&self, id: JobId) -> StoreResult<Option<Job>> {
        sqlx::query("SELECT * FROM jobs WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?
            .as_ref()
            .map(job_from_row)
            .transpose()
    }

    async fn list_jobs(&self, f: &JobFilter, page: &PageRequest) -> StoreResult<Vec<Job>> {
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT jobs.* FROM jobs JOIN tenants ON tenants.id = jobs.tenant_id WHERE 1 = 1",
        );
        if let Some(t) = f.tenant {
            q.push(" AND jobs.tenant_id = ").push_bind(t.to_string());
        }
        if let Some(org) = f.organization {
            q.push(" AND tenants.organization_id = ")
                .push_bind(org.to_string());
        }
        if let Some(status) = f.status {
            q.push(" AND jobs.status = ").push_bind(status.as_str());
        }
        if let Some(after) = page.after {
            q.push(" AND jobs.id < ").push_bind(after.to_string());
        }
        q.push(" ORDER BY jobs.id DESC LIMIT ")
            .push_bind(page_limit(page));
        q.build()
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?
            .iter()
            .map(job_from_row)
            .collect()
    }

    async fn claim_job(&self, c: &Claim<'_>) -> StoreResult<Option<Job>> {
        // One claiming transaction: BEGIN IMMEDIATE holds the write lock
        // from the pick to the update, so two workers never take one job.
        let mut tx = begin_write(&self.pool).await?;
        let expired = c.now - c.lease;
        let row = sqlx::query(
            "SELECT * FROM jobs
             WHERE (node IS NULL OR node = ?1) AND (?2 IS NULL OR id = ?2)
               AND ((status = 'queued' AND run_after <= ?3) OR (status = 'running' AND heartbeat_at < ?4))
             ORDER BY created_at LIMIT 1",
        )
        .bind(c.node)
        .bind(c.only.map(|j| j.to_string()))
        .bind(c.now)
        .bind(expired)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut job = job_from_row(&row)?;
        sqlx::query(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, heartbeat_at = ?, worker = ?, updated_at = ?
             WHERE id = ?",
        )
        .bind(c.now)
        .bind(c.worker)
        .bind(c.now)
        .bind(job.id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        job.status = JobStatus::Running;
        job.attempts += 1;
        job.heartbeat_at = Some(c.now);
        job.worker = Some(c.worker.to_owned());
        job.updated_at = c.now;
        Ok(Some(job))
    }

    async fn heartbeat_job(
        &self,
        id: JobId,
        worker: &str,
        now: DateTime<Utc>,
        progress: f64,
        state: Option<&serde_json::Value>,
    ) -> StoreResult<bool> {
        let state = state.map(to_json).transpose()?;
        let done = sqlx::query(
            "UPDATE jobs SET heartbeat_at = ?1, progress = ?2, state = coalesce(?3, state), updated_at = ?1
             WHERE id = ?4 AND worker = ?5 AND status = 'running'",
        )
        .bind(now)
        .bind(progress.clamp(0.0, 1.0))
        .bind(state)
        .bind(id.to_string())
        .bind(worker)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn finish_job(
        &self,
        id: JobId,
        worker: &str,
        now: DateTime<Utc>,
        outcome: &JobOutcome,
    ) -> StoreResult<bool> {
        let (status, progress, result_url, error, run_after) = outcome_columns(outcome, now);
        let done = sqlx::query(
            "UPDATE jobs SET status = ?1, progress = coalesce(?2, progress), result_url = ?3, error = ?4,
                    run_after = ?5, updated_at = ?6
             WHERE id = ?7 AND worker = ?8 AND status = 'running'",
        )
        .bind(status.as_str())
        .bind(progress)
        .bind(result_url)
        .bind(error)
        .bind(run_after)
        .bind(now)
        .bind(id.to_string())
        .bind(worker)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn import_control(
        &self,
        t: &Tenant,
        job: JobId,
        worker: &str,
        state: &serde_json::Value,
        step: &ControlImport,
    ) -> StoreResult<()> {
        let id = t.id.to_string();
        let mut tx = begin_write(&self.pool).await?;
        require_live(&mut tx, t).await?;
        for u in &step.users {
            sqlx::query(
                "INSERT INTO users (tenant_id, id, email, name, role, phone, password_hash, active, created_at, updated_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&id)
            .bind(u.id.to_string())
            .bind(&u.email)
            .bind(&u.name)
            .bind(u.role.as_str())
            .bind(&u.phone)
            .bind(&u.password_hash)
            .bind(u.active)
            .bind(u.created_at)
            .bind(u.updated_at)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        }
        for e in &step.config {
            sqlx::query(
                "INSERT INTO tenant_config (tenant_id, key, value, encrypted, updated_at) VALUES (?, ?, ?, ?, ?)
                 ON CONFLICT (tenant_id, key) DO UPDATE
                 SET value = excluded.value, encrypted = excluded.encrypted, updated_at = excluded.updated_at",
            )
            .bind(&id)
            .bind(&e.key)
            .bind(to_json(&e.value)?)
            .bind(e.encrypted)
            .bind(e.updated_at)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        }
        for (day, n) in &step.counts {
            sqlx::query(
                "INSERT INTO request_counts (tenant_id, day, requests) VALUES (?, ?, ?)
                 ON CONFLICT (tenant_id, day) DO UPDATE SET requests = requests + excluded.requests",
            )
            .bind(&id)
            .bind(day.to_string())
            .bind(i64::try_from(*n).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        }
        if let Some(f) = &step.fields {
            sqlx::query("UPDATE tenants SET name = ?, metadata = ?, branding = ?, updated_at = ? WHERE id = ?")
                .bind(&f.name)
                .bind(to_json(&f.metadata)?)
                .bind(to_json(&f.branding)?)
                .bind(Utc::now())
                .bind(&id)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
        }
        let chain = control_chain(t);
        for (entry, at) in &step.relink {
            audit::append_at(&mut tx, &chain, entry, *at).await?;
        }
        if let Some(entry) = &step.audit {
            audit::append(&mut tx, &chain, entry).await?;
        }
        let held = sqlx::query(
            "UPDATE jobs SET state = ?1, heartbeat_at = ?2, updated_at = ?2
             WHERE id = ?3 AND worker = ?4 AND status = 'running'",
        )
        .bind(to_json(state)?)
        .bind(Utc::now())
        .bind(job.to_string())
        .bind(worker)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        if held.rows_affected() == 0 {
            return Err(StoreError::Unavailable("the job was taken over".into()));
        }
        tx.commit().await.map_err(db_error)
    }

    async fn undo_restore(
        &self,
        t: &Tenant,
        users: &[UserId],
        config_keys: &[String],
    ) -> StoreResult<()> {
        let id = t.id.to_string();
        let mut tx = begin_write(&self.pool).await?;
        for user in users {
            for sql in [
                "DELETE FROM refresh_tokens WHERE tenant_id = ? AND user_id = ?",
                "DELETE FROM users WHERE tenant_id = ? AND id = ?",
            ] {
                sqlx::query(sql)
                    .bind(&id)
                    .bind(user.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
            }
        }
        for key in config_keys {
            sqlx::query("DELETE FROM tenant_config WHERE tenant_id = ? AND key = ?")
                .bind(&id)
                .bind(key)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::{ConnectOptions, Connection};

    /// A database still locked when the busy timeout runs out is a
    /// condition that passes (503 and Retry-After), not an internal error.
    #[tokio::test]
    async fn busy_past_the_timeout_is_unavailable_not_internal() {
        let dir = tempfile::tempdir().expect("dir");
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("busy.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_millis(20));
        let mut holder = options.connect().await.expect("connect");
        sqlx::query("CREATE TABLE t (x)")
            .execute(&mut holder)
            .await
            .expect("create");
        let mut other = options.connect().await.expect("connect");
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut holder)
            .await
            .expect("lock");
        let refused = sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut other)
            .await
            .expect_err("busy");
        assert!(matches!(db_error(refused), StoreError::Unavailable(_)));
        holder.close().await.expect("close");
    }
}
