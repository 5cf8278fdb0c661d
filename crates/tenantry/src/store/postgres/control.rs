//! The PostgreSQL control store: tenants, their placement, configuration
//! and request counts, in the main database.

use super::audit::{self, ChainAt};
use super::jobs::insert_job_row;
use super::require_live;
use super::{PgDatabase, col, count, pg_error, set_tenant, tenant_schema_version, tenant_tx};
use crate::audit::NewAuditEntry;
use crate::clock::{Clock, SystemClock};
use crate::ids::{OrgId, TenantId};
use crate::job::Job;
use crate::store::{
    ConfigEntry, ControlStore, PageRequest, StoreError, StoreResult, TenantChange, TenantFilter,
    decode, isolation,
};
use crate::tenant::{Slug, Tenant, TenantStatus};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Postgres;
use sqlx::postgres::PgRow;
use std::sync::Arc;
use uuid::Uuid;

/// The PostgreSQL control store. It also holds the platform's records
/// (`platform`), the job queue (`jobs`) and tenant identity (`identity`).
#[derive(Clone)]
pub struct PgControlStore {
    pub(crate) db: PgDatabase,
    /// Stamps the audit entries.
    pub(super) clock: Arc<dyn Clock>,
}

impl PgControlStore {
    pub fn new(db: PgDatabase) -> Self {
        Self {
            db,
            clock: Arc::new(SystemClock),
        }
    }

    /// Audit entries stamped by `clock` (the system clock by default).
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        Self { clock, ..self }
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
        audit::append_at(&mut tx, &ChainAt::control(t.id), a, self.clock.now()).await?;
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
        crate::store::listing::tenants::<Postgres>(f, page)
            .build()
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
        audit::append_at(&mut tx, &ChainAt::control(id), a, self.clock.now()).await?;
        tx.commit().await.map_err(pg_error)?;
        tenant_from_row(&row)
    }

    async fn set_tenant_status(
        &self,
        t: &Tenant,
        status: TenantStatus,
        now: DateTime<Utc>,
        a: &NewAuditEntry,
    ) -> StoreResult<()> {
        let mut tx = tenant_tx(&self.db.runtime, t.id).await?;
        let done = sqlx::query(
            "UPDATE tenants SET status = $1, updated_at = $2 WHERE id = $3 AND status IN ('active', 'suspended')",
        )
        .bind(status.as_str())
        .bind(now)
        .bind(t.id.0)
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        audit::append_at(&mut tx, &ChainAt::control(t.id), a, self.clock.now()).await?;
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
        audit::append_at(&mut tx, &ChainAt::control(t.id), a, self.clock.now()).await?;
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
        audit::append_at(&mut tx, &ChainAt::control(from.id), a, self.clock.now()).await?;
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
        audit::append_at(&mut tx, &ChainAt::control(t.id), a, self.clock.now()).await?;
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
        audit::append_at(&mut tx, &ChainAt::control(t.id), a, self.clock.now()).await?;
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
            audit::append_at(&mut tx, &ChainAt::control(t.id), a, self.clock.now()).await?;
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(deleted)
    }
}
