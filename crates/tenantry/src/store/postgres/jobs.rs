//! The job queue on PostgreSQL, and the control-store steps jobs take.

use super::control::PgControlStore;
use super::require_live;
use crate::audit::NewAuditEntry;
use crate::ids::{JobId, TenantId, UserId};
use crate::job::{Claim, Job, JobFilter, JobKind, JobOutcome, JobStatus};
use crate::store::postgres::audit::{self, ChainAt};
use crate::store::postgres::{col, pg_error, tenant_tx};
use crate::store::{
    ControlImport, JobStore, PageRequest, StoreError, StoreResult, decode, outcome_columns,
};
use crate::tenant::Tenant;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use sqlx::Postgres;
use sqlx::postgres::PgRow;
use uuid::Uuid;

pub(super) fn job_from_row(row: &PgRow) -> StoreResult<Job> {
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
pub(super) async fn insert_job_row(conn: &mut PgConnection, j: &Job) -> StoreResult<()> {
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

#[async_trait]
impl JobStore for PgControlStore {
    async fn insert_job(&self, t: &Tenant, job: &Job, a: &NewAuditEntry) -> StoreResult<()> {
        let mut tx = tenant_tx(&self.db.runtime, t.id).await?;
        require_live(&mut tx, t).await?;
        insert_job_row(&mut tx, job).await?;
        audit::append_at(&mut tx, &ChainAt::control(t.id), a, self.clock.now()).await?;
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
        crate::store::listing::jobs::<Postgres>(f, page)
            .build()
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
        now: DateTime<Utc>,
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
                "UPDATE tenants SET name = $1, metadata = $2, branding = $3, updated_at = $4 WHERE id = $5",
            )
            .bind(&f.name)
            .bind(&f.metadata)
            .bind(&f.branding)
            .bind(now)
            .bind(t.id.0)
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        }
        let chain = ChainAt::control(t.id);
        // Borrowed pairs, gathered first: a closure's borrow would keep the
        // future from being Send.
        let relink: Vec<_> = step.relink.iter().map(|(e, t)| (e, *t)).collect();
        audit::append_all_at(&mut tx, &chain, relink).await?;
        if let Some(entry) = &step.audit {
            audit::append_at(&mut tx, &chain, entry, self.clock.now()).await?;
        }
        let held = sqlx::query(
            "UPDATE jobs SET state = $1, heartbeat_at = $2, updated_at = $2
             WHERE id = $3 AND worker = $4 AND status = 'running'",
        )
        .bind(state)
        .bind(now)
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
