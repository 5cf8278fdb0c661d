//! The control store on PostgreSQL.

use super::audit::{self, ChainAt};
use super::{PgDatabase, col, count, pg_error, set_tenant, tenant_schema_version, tenant_tx};
use crate::Role;
use crate::audit::NewAuditEntry;
use crate::ids::{JobId, OrgId, TenantId, UserId};
use crate::job::{Claim, Job, JobFilter, JobKind, JobOutcome, JobStatus};
use crate::plan::Plan;
use crate::store::{
    ConfigEntry, ControlImport, ControlStore, Organization, PageRequest, PlatformUser, StoreError,
    StoreResult, TenantChange, TenantFilter, decode, isolation, outcome_columns, page_limit,
    substring_pattern,
};
use crate::tenant::{Slug, Tenant, TenantStatus};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

/// The PostgreSQL control store: platform users, plans, organizations,
/// tenants, their config and identity, in the main database.
#[derive(Clone)]
pub struct PgControlStore {
    pub(crate) db: PgDatabase,
}

impl PgControlStore {
    pub fn new(db: PgDatabase) -> Self {
        Self { db }
    }

    pub fn database(&self) -> &PgDatabase {
        &self.db
    }

    /// One live tenant by a unique column; `condition` is a fixed fragment of ours.
    async fn live_tenant_where<T>(
        &self,
        condition: &'static str,
        value: T,
    ) -> StoreResult<Option<Tenant>>
    where
        T: for<'q> sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres> + Send,
    {
        sqlx::query(&format!(
            "SELECT * FROM tenants WHERE {condition} AND status IN ('active', 'suspended')"
        ))
        .bind(value)
        .fetch_optional(&self.db.runtime)
        .await
        .map_err(pg_error)?
        .as_ref()
        .map(tenant_from_row)
        .transpose()
    }
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

fn job_from_row(row: &PgRow) -> StoreResult<Job> {
    let kind: String = col(row, "kind")?;
    let status: String = col(row, "status")?;
    let attempts: i32 = col(row, "attempts")?;
    Ok(Job {
        id: JobId(col(row, "id")?),
        tenant_id: TenantId(col(row, "tenant_id")?),
        kind: decode(&kind, JobKind::parse, "job kind")?,
        status: decode(&status, JobStatus::parse, "job status")?,
        progress: col(row, "progress")?,
        params: col(row, "params")?,
        state: col(row, "state")?,
        result_url: col(row, "result_url")?,
        error: col(row, "error")?,
        attempts: u32::try_from(attempts.max(0)).unwrap_or(0),
        heartbeat_at: col(row, "heartbeat_at")?,
        worker: col(row, "worker")?,
        node: col(row, "node")?,
        run_after: col(row, "run_after")?,
        created_by: col(row, "created_by")?,
        created_at: col(row, "created_at")?,
        updated_at: col(row, "updated_at")?,
    })
}

/// Inserts a queued job; the partial unique index refuses a second
/// unfinished job of one tenant.
async fn insert_job_row(conn: &mut PgConnection, j: &Job) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO jobs (id, tenant_id, kind, status, progress, params, state, result_url, error, attempts,
                           heartbeat_at, worker, node, run_after, created_by, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
    )
    .bind(j.id.0)
    .bind(j.tenant_id.0)
    .bind(j.kind.as_str())
    .bind(j.status.as_str())
    .bind(j.progress)
    .bind(&j.params)
    .bind(&j.state)
    .bind(&j.result_url)
    .bind(&j.error)
    .bind(i32::try_from(j.attempts).unwrap_or(i32::MAX))
    .bind(j.heartbeat_at)
    .bind(&j.worker)
    .bind(&j.node)
    .bind(j.run_after)
    .bind(&j.created_by)
    .bind(j.created_at)
    .bind(j.updated_at)
    .execute(&mut *conn)
    .await
    .map_err(|e| match pg_error(e) {
        StoreError::Conflict(_) => StoreError::Conflict("job".into()),
        other => other,
    })?;
    Ok(())
}

fn tenant_from_row(row: &PgRow) -> StoreResult<Tenant> {
    let slug: String = col(row, "slug")?;
    let status: String = col(row, "status")?;
    let iso: String = col(row, "isolation")?;
    Ok(Tenant {
        id: TenantId(col(row, "id")?),
        slug: Slug::parse_allowing_reserved(&slug)
            .map_err(|e| StoreError::Internal(format!("bad slug in store: {e}")))?,
        name: col(row, "name")?,
        plan: col(row, "plan")?,
        status: decode(&status, TenantStatus::parse, "status")?,
        isolation: isolation(&iso)?,
        organization_id: col::<Option<Uuid>>(row, "organization_id")?.map(OrgId),
        domain: col(row, "domain")?,
        metadata: col(row, "metadata")?,
        branding: col(row, "branding")?,
        created_at: col(row, "created_at")?,
        updated_at: col(row, "updated_at")?,
        placement: col(row, "placement")?,
    })
}

fn platform_user_from_row(row: &PgRow) -> StoreResult<PlatformUser> {
    let role: String = col(row, "role")?;
    Ok(PlatformUser {
        id: UserId(col(row, "id")?),
        email: col(row, "email")?,
        name: col(row, "name")?,
        password_hash: col(row, "password_hash")?,
        role: decode(&role, Role::parse, "role")?,
        organization_id: col::<Option<Uuid>>(row, "organization_id")?.map(OrgId),
        created_at: col(row, "created_at")?,
    })
}

fn org_from_row(row: &PgRow) -> StoreResult<Organization> {
    Ok(Organization {
        id: OrgId(col(row, "id")?),
        name: col(row, "name")?,
        description: col(row, "description")?,
        created_at: col(row, "created_at")?,
    })
}

fn plan_from_row(row: &PgRow) -> StoreResult<Plan> {
    serde_json::from_value(col(row, "body")?)
        .map_err(|e| StoreError::Internal(format!("bad plan in store: {e}")))
}

fn config_from_row(row: &PgRow) -> StoreResult<ConfigEntry> {
    Ok(ConfigEntry {
        key: col(row, "key")?,
        value: col(row, "value")?,
        encrypted: col(row, "encrypted")?,
        updated_at: col(row, "updated_at")?,
    })
}

#[async_trait]
impl ControlStore for PgControlStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.db.runtime)
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    async fn insert_platform_user(&self, u: &PlatformUser, a: &NewAuditEntry) -> StoreResult<()> {
        let mut tx = self.db.runtime.begin().await.map_err(pg_error)?;
        sqlx::query(
            "INSERT INTO platform_users (id, email, name, password_hash, role, organization_id, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(u.id.0)
        .bind(&u.email)
        .bind(&u.name)
        .bind(&u.password_hash)
        .bind(u.role.as_str())
        .bind(u.organization_id.map(|o| o.0))
        .bind(u.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| match pg_error(e) {
            StoreError::Conflict(_) => StoreError::Conflict("email".into()),
            other => other,
        })?;
        audit::append(&mut tx, &ChainAt::platform(), a).await?;
        tx.commit().await.map_err(pg_error)
    }

    async fn platform_user_by_email(&self, email: &str) -> StoreResult<Option<PlatformUser>> {
        sqlx::query("SELECT * FROM platform_users WHERE lower(email) = lower($1)")
            .bind(email)
            .fetch_optional(&self.db.runtime)
            .await
            .map_err(pg_error)?
            .as_ref()
            .map(platform_user_from_row)
            .transpose()
    }

    async fn platform_user(&self, id: UserId) -> StoreResult<Option<PlatformUser>> {
        sqlx::query("SELECT * FROM platform_users WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&self.db.runtime)
            .await
            .map_err(pg_error)?
            .as_ref()
            .map(platform_user_from_row)
            .transpose()
    }

    async fn count_super_admins(&self) -> StoreResult<u64> {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM platform_users WHERE role = 'super_admin'")
                .fetch_one(&self.db.runtime)
                .await
                .map_err(pg_error)?;
        Ok(count(n))
    }

    async fn list_plans(&self) -> StoreResult<Vec<Plan>> {
        sqlx::query("SELECT body FROM plans ORDER BY code")
            .fetch_all(&self.db.runtime)
            .await
            .map_err(pg_error)?
            .iter()
            .map(plan_from_row)
            .collect()
    }

    async fn plan(&self, code: &str) -> StoreResult<Option<Plan>> {
        sqlx::query("SELECT body FROM plans WHERE code = $1")
            .bind(code)
            .fetch_optional(&self.db.runtime)
            .await
            .map_err(pg_error)?
            .as_ref()
            .map(plan_from_row)
            .transpose()
    }

    async fn upsert_plan(&self, plan: &Plan, a: &NewAuditEntry) -> StoreResult<bool> {
        let mut tx = self.db.runtime.begin().await.map_err(pg_error)?;
        // One statement: `xmax = 0` holds for a freshly inserted row only, so
        // "was it new" is answered atomically with the write.
        let inserted: bool = sqlx::query_scalar(
            "INSERT INTO plans (code, body) VALUES ($1, $2)
             ON CONFLICT (code) DO UPDATE SET body = excluded.body
             RETURNING (xmax = 0)",
        )
        .bind(&plan.code)
        .bind(Json(plan))
        .fetch_one(&mut *tx)
        .await
        .map_err(pg_error)?;
        audit::append(&mut tx, &ChainAt::platform(), a).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(inserted)
    }

    async fn seed_plans(&self, plans: &[Plan]) -> StoreResult<()> {
        for plan in plans {
            sqlx::query(
                "INSERT INTO plans (code, body) VALUES ($1, $2) ON CONFLICT (code) DO NOTHING",
            )
            .bind(&plan.code)
            .bind(Json(plan))
            .execute(&self.db.runtime)
            .await
            .map_err(pg_error)?;
        }
        Ok(())
    }

    async fn insert_org(&self, org: &Organization, a: &NewAuditEntry) -> StoreResult<()> {
        let mut tx = self.db.runtime.begin().await.map_err(pg_error)?;
        sqlx::query(
            "INSERT INTO organizations (id, name, description, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(org.id.0)
        .bind(&org.name)
        .bind(&org.description)
        .bind(org.created_at)
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        audit::append(&mut tx, &ChainAt::platform(), a).await?;
        tx.commit().await.map_err(pg_error)
    }

    async fn org(&self, id: OrgId) -> StoreResult<Option<Organization>> {
        sqlx::query("SELECT * FROM organizations WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&self.db.runtime)
            .await
            .map_err(pg_error)?
            .as_ref()
            .map(org_from_row)
            .transpose()
    }

    async fn list_orgs(
        &self,
        only: Option<OrgId>,
        page: &PageRequest,
    ) -> StoreResult<Vec<Organization>> {
        let mut q = QueryBuilder::<Postgres>::new("SELECT * FROM organizations WHERE 1 = 1");
        if let Some(only) = only {
            q.push(" AND id = ").push_bind(only.0);
        }
        if let Some(after) = page.after {
            q.push(" AND id > ").push_bind(after);
        }
        q.push(" ORDER BY id LIMIT ").push_bind(page_limit(page));
        q.build()
            .fetch_all(&self.db.runtime)
            .await
            .map_err(pg_error)?
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
        // The tenant's context is set for the key row (tenant_keys has RLS).
        let mut tx = tenant_tx(&self.db.runtime, t.id).await?;
        sqlx::query(
            "INSERT INTO tenants (id, slug, name, plan, status, isolation, organization_id, domain,
                                  metadata, branding, created_at, updated_at, schema_version, placement)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(t.id.0)
        .bind(t.slug.as_str())
        .bind(&t.name)
        .bind(&t.plan)
        .bind(t.status.as_str())
        .bind(t.isolation.as_str())
        .bind(t.organization_id.map(|o| o.0))
        .bind(&t.domain)
        .bind(&t.metadata)
        .bind(&t.branding)
        .bind(t.created_at)
        .bind(t.updated_at)
        .bind(tenant_schema_version())
        .bind(&t.placement)
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        sqlx::query("INSERT INTO tenant_keys (tenant_id, wrapped_key) VALUES ($1, $2)")
            .bind(t.id.0)
            .bind(wrapped_key)
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        audit::append(&mut tx, &ChainAt::control(t.id), a).await?;
        tx.commit().await.map_err(pg_error)
    }

    async fn tenant_by_id(&self, id: TenantId) -> StoreResult<Option<Tenant>> {
        self.live_tenant_where("id = $1", id.0).await
    }

    async fn tenant_any(&self, id: TenantId) -> StoreResult<Option<Tenant>> {
        sqlx::query("SELECT * FROM tenants WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&self.db.runtime)
            .await
            .map_err(pg_error)?
            .as_ref()
            .map(tenant_from_row)
            .transpose()
    }

    async fn tenant_by_slug(&self, slug: &str) -> StoreResult<Option<Tenant>> {
        self.live_tenant_where("slug = $1", slug.to_owned()).await
    }

    async fn tenant_by_domain(&self, domain: &str) -> StoreResult<Option<Tenant>> {
        self.live_tenant_where("domain = $1", domain.to_owned())
            .await
    }

    async fn list_tenants(&self, f: &TenantFilter, page: &PageRequest) -> StoreResult<Vec<Tenant>> {
        let mut q = QueryBuilder::<Postgres>::new("SELECT * FROM tenants WHERE 1 = 1");
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
            q.push(" AND organization_id = ").push_bind(org.0);
        }
        if let Some(text) = &f.q {
            let pattern = substring_pattern(text);
            q.push(" AND (name ILIKE ")
                .push_bind(pattern.clone())
                .push(" ESCAPE '\\' OR slug ILIKE ")
                .push_bind(pattern)
                .push(" ESCAPE '\\')");
        }
        if let Some(after) = page.after {
            q.push(" AND id > ").push_bind(after);
        }
        q.push(" ORDER BY id LIMIT ").push_bind(page_limit(page));
        q.build()
            .fetch_all(&self.db.runtime)
            .await
            .map_err(pg_error)?
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
        let mut tx = tenant_tx(&self.db.runtime, id).await?;
        let row = sqlx::query(
            "UPDATE tenants SET slug = COALESCE($1, slug), name = COALESCE($2, name),
                    plan = COALESCE($3, plan), domain = CASE WHEN $4 THEN $5 ELSE domain END,
                    metadata = COALESCE($6, metadata), branding = COALESCE($7, branding),
                    updated_at = $8
             WHERE id = $9 AND status IN ('active', 'suspended')
             RETURNING *",
        )
        .bind(c.slug.as_ref().map(|s| s.as_str()))
        .bind(&c.name)
        .bind(&c.plan)
        .bind(c.domain.is_some())
        .bind(c.domain.clone().flatten())
        .bind(&c.metadata)
        .bind(&c.branding)
        .bind(c.updated_at)
        .bind(id.0)
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg_error)?
        .ok_or(StoreError::NotFound)?;
        audit::append(&mut tx, &ChainAt::control(id), a).await?;
        tx.commit().await.map_err(pg_error)?;
        tenant_from_row(&row)
    }

    async fn set_tenant_status(
        &self,
        t: &Tenant,
        status: TenantStatus,
        a: &NewAuditEntry,
    ) -> StoreResult<()> {
        let mut tx = tenant_tx(&self.db.runtime, t.id).await?;
        let done = sqlx::query(
            "UPDATE tenants SET status = $1, updated_at = $2 WHERE id = $3 AND status IN ('active', 'suspended')",
        )
        .bind(status.as_str())
        .bind(chrono::Utc::now())
        .bind(t.id.0)
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        audit::append(&mut tx, &ChainAt::control(t.id), a).await?;
        tx.commit().await.map_err(pg_error)
    }

    async fn mark_tenant_deleting(
        &self,
        t: &Tenant,
        job: &Job,
        a: &NewAuditEntry,
    ) -> StoreResult<()> {
        let mut tx = tenant_tx(&self.db.runtime, t.id).await?;
        // A job that has started (running, or queued again after an
        // interrupted run) may have work to undo: it finishes first.
        let started: Option<Uuid> = sqlx::query_scalar(
            "SELECT id FROM jobs WHERE tenant_id = $1
             AND (status = 'running' OR (status = 'queued' AND attempts > 0)) FOR UPDATE",
        )
        .bind(t.id.0)
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg_error)?;
        if started.is_some() {
            return Err(StoreError::Conflict("job".into()));
        }
        let done = sqlx::query(
            "UPDATE tenants SET status = 'deleting', updated_at = $1
             WHERE id = $2 AND status IN ('active', 'suspended')",
        )
        .bind(job.created_at)
        .bind(t.id.0)
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        sqlx::query(
            "UPDATE jobs SET status = 'failed', error = 'cancelled: the tenant is being deleted', updated_at = $1
             WHERE tenant_id = $2 AND status = 'queued' AND attempts = 0",
        )
        .bind(job.created_at)
        .bind(t.id.0)
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        insert_job_row(&mut tx, job).await?;
        audit::append(&mut tx, &ChainAt::control(t.id), a).await?;
        tx.commit().await.map_err(pg_error)
    }

    async fn relocate_tenant(
        &self,
        from: &Tenant,
        to: &Tenant,
        a: &NewAuditEntry,
    ) -> StoreResult<()> {
        let mut tx = tenant_tx(&self.db.runtime, from.id).await?;
        let done = sqlx::query(
            "UPDATE tenants SET isolation = $1, placement = $2, schema_version = $3, updated_at = $4
             WHERE id = $5 AND status IN ('active', 'suspended') AND isolation = $6
               AND placement IS NOT DISTINCT FROM $7",
        )
        .bind(to.isolation.as_str())
        .bind(&to.placement)
        .bind(tenant_schema_version())
        .bind(to.updated_at)
        .bind(from.id.0)
        .bind(from.isolation.as_str())
        .bind(&from.placement)
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        audit::append(&mut tx, &ChainAt::control(from.id), a).await?;
        tx.commit().await.map_err(pg_error)
    }

    async fn purge_tenant(&self, t: &Tenant, a: &NewAuditEntry) -> StoreResult<()> {
        // One transaction in the tenant's context: the RLS'd tables only
        // show (and let us delete) this tenant's rows. audit_log stays: the
        // runtime role cannot delete from it, and the chain outlives the tenant.
        let mut tx = tenant_tx(&self.db.runtime, t.id).await?;
        for sql in [
            "DELETE FROM tenant_config WHERE tenant_id = $1",
            "DELETE FROM request_counts WHERE tenant_id = $1",
            "DELETE FROM refresh_tokens WHERE tenant_id = $1",
            "DELETE FROM otp_codes WHERE tenant_id = $1",
            "DELETE FROM users WHERE tenant_id = $1",
            "DELETE FROM tenant_keys WHERE tenant_id = $1",
            "UPDATE tenants SET status = 'deleted', domain = NULL, metadata = '{}', branding = '{}',
                    updated_at = now() WHERE id = $1 AND status = 'deleting'",
        ] {
            sqlx::query(sql)
                .bind(t.id.0)
                .execute(&mut *tx)
                .await
                .map_err(pg_error)?;
        }
        audit::append(&mut tx, &ChainAt::control(t.id), a).await?;
        tx.commit().await.map_err(pg_error)
    }

    async fn tenant_wrapped_key(&self, t: &Tenant) -> StoreResult<Vec<u8>> {
        let mut tx = tenant_tx(&self.db.runtime, t.id).await?;
        let key: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT wrapped_key FROM tenant_keys WHERE tenant_id = $1")
                .bind(t.id.0)
                .fetch_optional(&mut *tx)
                .await
                .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        key.ok_or_else(|| StoreError::Internal(format!("tenant {} has no data key", t.id)))
    }

    async fn placement_counts(&self) -> StoreResult<Vec<(Option<String>, u64)>> {
        let rows: Vec<(Option<String>, i64)> = sqlx::query_as(
            "SELECT placement, count(*) FROM tenants WHERE status <> 'deleted' GROUP BY placement",
        )
        .fetch_all(&self.db.runtime)
        .await
        .map_err(pg_error)?;
        Ok(rows
            .into_iter()
            .map(|(p, n)| (p, n.max(0) as u64))
            .collect())
    }

    async fn dedicated_behind(&self, version: i64) -> StoreResult<Vec<Tenant>> {
        sqlx::query(
            "SELECT * FROM tenants WHERE isolation = 'dedicated' AND status <> 'deleted'
             AND schema_version < $1 ORDER BY id",
        )
        .bind(version)
        .fetch_all(&self.db.runtime)
        .await
        .map_err(pg_error)?
        .iter()
        .map(tenant_from_row)
        .collect()
    }

    async fn set_schema_version(&self, t: &Tenant, version: i64) -> StoreResult<()> {
        sqlx::query("UPDATE tenants SET schema_version = $1 WHERE id = $2")
            .bind(version)
            .bind(t.id.0)
            .execute(&self.db.runtime)
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    async fn add_request_counts(
        &self,
        counts: &[(TenantId, chrono::NaiveDate, u64)],
    ) -> StoreResult<Vec<(TenantId, chrono::NaiveDate, u64)>> {
        // One transaction for the batch; the tenant context is switched
        // before each row so RLS's WITH CHECK accepts it.
        // Rows in one order everywhere: two instances flushing at once
        // then queue on the same row instead of deadlocking.
        let mut counts = counts.to_vec();
        counts.sort_unstable_by_key(|(tenant, day, _)| (tenant.0, *day));
        let mut totals = Vec::with_capacity(counts.len());
        let mut tx = self.db.runtime.begin().await.map_err(pg_error)?;
        for (tenant, day, n) in &counts {
            set_tenant(&mut tx, *tenant).await?;
            // Counts of a tenant deleted since are dropped, not written back.
            let total: Option<i64> = sqlx::query_scalar(
                "INSERT INTO request_counts (tenant_id, day, requests)
                 SELECT $1, $2, $3 WHERE EXISTS (
                     SELECT 1 FROM tenants WHERE id = $1 AND status IN ('active', 'suspended') FOR SHARE)
                 ON CONFLICT (tenant_id, day) DO UPDATE
                 SET requests = request_counts.requests + excluded.requests
                 RETURNING requests",
            )
            .bind(tenant.0)
            .bind(*day)
            .bind(i64::try_from(*n).unwrap_or(i64::MAX))
            .fetch_optional(&mut *tx)
            .await
            .map_err(pg_error)?;
            if let Some(total) = total {
                totals.push((*tenant, *day, total.max(0) as u64));
            }
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(totals)
    }

    async fn request_counts(
        &self,
        t: &Tenant,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    ) -> StoreResult<Vec<(chrono::NaiveDate, u64)>> {
        let mut tx = tenant_tx(&self.db.runtime, t.id).await?;
        let rows: Vec<(chrono::NaiveDate, i64)> = sqlx::query_as(
            "SELECT day, requests FROM request_counts
             WHERE tenant_id = $1 AND day >= $2 AND day <= $3 ORDER BY day",
        )
        .bind(t.id.0)
        .bind(from)
        .bind(to)
        .fetch_all(&mut *tx)
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(rows.into_iter().map(|(day, n)| (day, count(n))).collect())
    }

    async fn list_config(&self, t: &Tenant) -> StoreResult<Vec<ConfigEntry>> {
        let mut tx = tenant_tx(&self.db.runtime, t.id).await?;
        let rows = sqlx::query("SELECT * FROM tenant_config WHERE tenant_id = $1 ORDER BY key")
            .bind(t.id.0)
            .fetch_all(&mut *tx)
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        rows.iter().map(config_from_row).collect()
    }

    async fn config(&self, t: &Tenant, key: &str) -> StoreResult<Option<ConfigEntry>> {
        let mut tx = tenant_tx(&self.db.runtime, t.id).await?;
        let row = sqlx::query("SELECT * FROM tenant_config WHERE tenant_id = $1 AND key = $2")
            .bind(t.id.0)
            .bind(key)
            .fetch_optional(&mut *tx)
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        row.as_ref().map(config_from_row).transpose()
    }

    async fn put_config(&self, t: &Tenant, e: &ConfigEntry, a: &NewAuditEntry) -> StoreResult<()> {
        let mut tx = tenant_tx(&self.db.runtime, t.id).await?;
        require_live(&mut tx, t).await?;
        sqlx::query(
            "INSERT INTO tenant_config (tenant_id, key, value, encrypted, updated_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (tenant_id, key) DO UPDATE
             SET value = excluded.value, encrypted = excluded.encrypted, updated_at = excluded.updated_at",
        )
        .bind(t.id.0)
        .bind(&e.key)
        .bind(&e.value)
        .bind(e.encrypted)
        .bind(e.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        audit::append(&mut tx, &ChainAt::control(t.id), a).await?;
        tx.commit().await.map_err(pg_error)
    }

    async fn delete_config(&self, t: &Tenant, key: &str, a: &NewAuditEntry) -> StoreResult<bool> {
        let mut tx = tenant_tx(&self.db.runtime, t.id).await?;
        let done = sqlx::query("DELETE FROM tenant_config WHERE tenant_id = $1 AND key = $2")
            .bind(t.id.0)
            .bind(key)
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        let deleted = done.rows_affected() > 0;
        if deleted {
            audit::append(&mut tx, &ChainAt::control(t.id), a).await?;
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(deleted)
    }
    async fn insert_job(&self, t: &Tenant, job: &Job, a: &NewAuditEntry) -> StoreResult<()> {
        let mut tx = tenant_tx(&self.db.runtime, t.id).await?;
        require_live(&mut tx, t).await?;
        insert_job_row(&mut tx, job).await?;
        audit::append(&mut tx, &ChainAt::control(t.id), a).await?;
        tx.commit().await.map_err(pg_error)
    }

    async fn job(&self, id: JobId) -> StoreResult<Option<Job>> {
        sqlx::query("SELECT * FROM jobs WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&self.db.runtime)
            .await
            .map_err(pg_error)?
            .as_ref()
            .map(job_from_row)
            .transpose()
    }

    async fn list_jobs(&self, f: &JobFilter, page: &PageRequest) -> StoreResult<Vec<Job>> {
        let mut q = QueryBuilder::<Postgres>::new(
            "SELECT jobs.* FROM jobs JOIN tenants ON tenants.id = jobs.tenant_id WHERE true",
        );
        if let Some(t) = f.tenant {
            q.push(" AND jobs.tenant_id = ").push_bind(t.0);
        }
        if let Some(org) = f.organization {
            q.push(" AND tenants.organization_id = ").push_bind(org.0);
        }
        if let Some(status) = f.status {
            q.push(" AND jobs.status = ").push_bind(status.as_str());
        }
        if let Some(after) = page.after {
            q.push(" AND jobs.id < ").push_bind(after);
        }
        q.push(" ORDER BY jobs.id DESC LIMIT ")
            .push_bind(page_limit(page));
        q.build()
            .fetch_all(&self.db.runtime)
            .await
            .map_err(pg_error)?
            .iter()
            .map(job_from_row)
            .collect()
    }

    async fn claim_job(&self, c: &Claim<'_>) -> StoreResult<Option<Job>> {
        // SKIP LOCKED: concurrent claimers pass over a row another is taking
        // instead of waiting for it, and never take the same one.
        sqlx::query(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, heartbeat_at = $1,
                    worker = $2, updated_at = $1
             WHERE id = (
                SELECT id FROM jobs
                WHERE (node IS NULL OR node = $3) AND ($4::uuid IS NULL OR id = $4)
                  AND ((status = 'queued' AND run_after <= $1) OR (status = 'running' AND heartbeat_at < $5))
                ORDER BY created_at LIMIT 1
                FOR UPDATE SKIP LOCKED)
             RETURNING *",
        )
        .bind(c.now)
        .bind(c.worker)
        .bind(c.node)
        .bind(c.only.map(|j| j.0))
        .bind(c.now - c.lease)
        .fetch_optional(&self.db.runtime)
        .await
        .map_err(pg_error)?
        .as_ref()
        .map(job_from_row)
        .transpose()
    }

    async fn heartbeat_job(
        &self,
        id: JobId,
        worker: &str,
        now: DateTime<Utc>,
        progress: f64,
        state: Option<&serde_json::Value>,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET heartbeat_at = $1, progress = $2, state = coalesce($3, state), updated_at = $1
             WHERE id = $4 AND worker = $5 AND status = 'running'",
        )
        .bind(now)
        .bind(progress.clamp(0.0, 1.0))
        .bind(state)
        .bind(id.0)
        .bind(worker)
        .execute(&self.db.runtime)
        .await
        .map_err(pg_error)?;
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
            "UPDATE jobs SET status = $1, progress = coalesce($2, progress), result_url = $3, error = $4,
                    run_after = $5, updated_at = $6
             WHERE id = $7 AND worker = $8 AND status = 'running'",
        )
        .bind(status.as_str())
        .bind(progress)
        .bind(result_url)
        .bind(error)
        .bind(run_after)
        .bind(now)
        .bind(id.0)
        .bind(worker)
        .execute(&self.db.runtime)
        .await
        .map_err(pg_error)?;
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
        let mut tx = tenant_tx(&self.db.runtime, t.id).await?;
        require_live(&mut tx, t).await?;
        for u in &step.users {
            sqlx::query(
                "INSERT INTO users (tenant_id, id, email, name, role, phone, password_hash, active, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(t.id.0)
            .bind(u.id.0)
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
            .map_err(pg_error)?;
        }
        for e in &step.config {
            sqlx::query(
                "INSERT INTO tenant_config (tenant_id, key, value, encrypted, updated_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (tenant_id, key) DO UPDATE
                 SET value = excluded.value, encrypted = excluded.encrypted, updated_at = excluded.updated_at",
            )
            .bind(t.id.0)
            .bind(&e.key)
            .bind(&e.value)
            .bind(e.encrypted)
            .bind(e.updated_at)
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        }
        for (day, n) in &step.counts {
            sqlx::query(
                "INSERT INTO request_counts (tenant_id, day, requests) VALUES ($1, $2, $3)
                 ON CONFLICT (tenant_id, day) DO UPDATE
                 SET requests = request_counts.requests + excluded.requests",
            )
            .bind(t.id.0)
            .bind(*day)
            .bind(i64::try_from(*n).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        }
        if let Some(f) = &step.fields {
            sqlx::query(
                "UPDATE tenants SET name = $1, metadata = $2, branding = $3, updated_at = now() WHERE id = $4",
            )
            .bind(&f.name)
            .bind(&f.metadata)
            .bind(&f.branding)
            .bind(t.id.0)
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        }
        let chain = ChainAt::control(t.id);
        audit::append_all_at(&mut tx, &chain, &step.relink).await?;
        if let Some(entry) = &step.audit {
            audit::append(&mut tx, &chain, entry).await?;
        }
        let held = sqlx::query(
            "UPDATE jobs SET state = $1, heartbeat_at = now(), updated_at = now()
             WHERE id = $2 AND worker = $3 AND status = 'running'",
        )
        .bind(state)
        .bind(job.0)
        .bind(worker)
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        if held.rows_affected() == 0 {
            return Err(StoreError::Unavailable("the job was taken over".into()));
        }
        tx.commit().await.map_err(pg_error)
    }

    async fn undo_restore(
        &self,
        t: &Tenant,
        users: &[UserId],
        config_keys: &[String],
    ) -> StoreResult<()> {
        let mut tx = tenant_tx(&self.db.runtime, t.id).await?;
        let users: Vec<Uuid> = users.iter().map(|u| u.0).collect();
        for sql in [
            "DELETE FROM refresh_tokens WHERE tenant_id = $1 AND user_id = ANY($2)",
            "DELETE FROM users WHERE tenant_id = $1 AND id = ANY($2)",
        ] {
            sqlx::query(sql)
                .bind(t.id.0)
                .bind(&users)
                .execute(&mut *tx)
                .await
                .map_err(pg_error)?;
        }
        sqlx::query("DELETE FROM tenant_config WHERE tenant_id = $1 AND key = ANY($2)")
            .bind(t.id.0)
            .bind(config_keys)
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)
    }
}
