//! The job queue on SQLite, and the control-store steps jobs take.

use super::audit;
use super::control::SqliteControlStore;
use super::control_chain;
use super::{begin_write, db_error, json_col, require_live, to_json, uuid_col};

use crate::audit::NewAuditEntry;
use crate::ids::{JobId, UserId};
use crate::job::{Claim, Job, JobFilter, JobKind, JobOutcome, JobStatus};
use crate::store::{
    ControlImport, JobStore, PageRequest, StoreError, StoreResult, decode, outcome_columns,
};
use crate::tenant::Tenant;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite};

pub(super) fn job_from_row(row: &SqliteRow) -> StoreResult<Job> {
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
pub(super) async fn insert_job_row(
    tx: &mut sqlx::Transaction<'static, Sqlite>,
    j: &Job,
) -> StoreResult<()> {
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

#[async_trait]
impl JobStore for SqliteControlStore {
    async fn insert_job(&self, t: &Tenant, job: &Job, a: &NewAuditEntry) -> StoreResult<()> {
        let mut tx = begin_write(&self.pool).await?;
        require_live(&mut tx, t).await?;
        insert_job_row(&mut tx, job).await?;
        audit::append_at(&mut tx, &control_chain(t), a, self.clock.now()).await?;
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
        crate::store::listing::jobs::<Sqlite>(f, page)
            .build()
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
        now: DateTime<Utc>,
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
                .bind(now)
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
            audit::append_at(&mut tx, &chain, entry, self.clock.now()).await?;
        }
        let held = sqlx::query(
            "UPDATE jobs SET state = ?1, heartbeat_at = ?2, updated_at = ?2
             WHERE id = ?3 AND worker = ?4 AND status = 'running'",
        )
        .bind(to_json(state)?)
        .bind(now)
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
