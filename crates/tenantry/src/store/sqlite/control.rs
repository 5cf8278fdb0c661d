//! The SQLite control store: tenants, their placement, configuration and
//! request counts, in one database file beside the shared tenant data.

use super::control_chain;
use super::jobs::insert_job_row;
use super::{
    SYNCHRONOUS, begin_write, db_error, json_col, opt_uuid_col, require_live, to_json, uuid_col,
};
use super::{audit, data};
use crate::clock::{Clock, SystemClock};
use std::sync::Arc;

use crate::audit::NewAuditEntry;
use crate::ids::TenantId;
use crate::job::Job;
use crate::store::migrate::{MigratePolicy, must_run};
use crate::store::{
    ConfigEntry, ControlStore, PageRequest, StoreError, StoreResult, TenantChange, TenantFilter,
    decode, isolation,
};
use crate::tenant::{Slug, Tenant, TenantStatus};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow};
use sqlx::{Row, Sqlite, SqlitePool};
use std::path::Path;
use std::time::Duration;

pub(super) static MIGRATIONS: sqlx::migrate::Migrator =
    sqlx::migrate!("./migrations/control/sqlite");

/// The SQLite control store. It also holds the platform's records
/// (`platform`), the job queue (`jobs`) and tenant identity (`identity`).
#[derive(Clone)]
pub struct SqliteControlStore {
    pub(super) pool: SqlitePool,
    /// Stamps the audit entries.
    pub(super) clock: Arc<dyn Clock>,
}

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
        Ok(Self {
            pool,
            clock: Arc::new(SystemClock),
        })
    }

    /// Audit entries stamped by `clock` (the system clock by default).
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        Self { clock, ..self }
    }

    /// One live tenant by a unique column; `condition` is a fixed fragment of ours.
    pub(super) async fn live_tenant_where(
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

pub(super) fn tenant_from_row(row: &SqliteRow) -> StoreResult<Tenant> {
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

pub(super) fn config_from_row(row: &SqliteRow) -> StoreResult<ConfigEntry> {
    Ok(ConfigEntry {
        key: row.try_get("key").map_err(db_error)?,
        value: json_col(row, "value")?,
        encrypted: row.try_get("encrypted").map_err(db_error)?,
        updated_at: row.try_get("updated_at").map_err(db_error)?,
    })
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
        audit::append_at(&mut tx, &control_chain(t), a, self.clock.now()).await?;
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
        crate::store::listing::tenants::<Sqlite>(f, page)
            .build()
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
        audit::append_at(&mut tx, &control_chain(&tenant), a, self.clock.now()).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(tenant)
    }

    async fn set_tenant_status(
        &self,
        t: &Tenant,
        status: TenantStatus,
        now: DateTime<Utc>,
        a: &NewAuditEntry,
    ) -> StoreResult<()> {
        let mut tx = begin_write(&self.pool).await?;
        let done = sqlx::query(
            "UPDATE tenants SET status = ?, updated_at = ? WHERE id = ? AND status IN ('active', 'suspended')",
        )
        .bind(status.as_str())
        .bind(now)
        .bind(t.id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        audit::append_at(&mut tx, &control_chain(t), a, self.clock.now()).await?;
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
        audit::append_at(&mut tx, &control_chain(t), a, self.clock.now()).await?;
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
        audit::append_at(&mut tx, &control_chain(t), a, self.clock.now()).await?;
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
        audit::append_at(&mut tx, &control_chain(from), a, self.clock.now()).await?;
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
        audit::append_at(&mut tx, &control_chain(t), a, self.clock.now()).await?;
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
            audit::append_at(&mut tx, &control_chain(t), a, self.clock.now()).await?;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(deleted)
    }
}
