//! Background jobs: the workers that claim them from the control store's
//! queue and run them — exports, imports, moves and deletions, one module
//! each. A job runs through the same tenant-bound handles as a request.
//!
//! A worker heartbeats while it runs a job; one that stops (a crash, a
//! `kill -9`) loses the job when its lease runs out, and another worker (or
//! the restarted server) claims it again. Every job therefore resumes from
//! whatever point it was cut at: each kind keeps a checkpoint in the job's
//! `state` and makes each step safe to repeat.
//!
//! The heartbeat is a task of its own, and job loops yield after each page
//! (`yield_now`): SQLite statements run on the async thread without
//! yielding, and a job polled alongside its heartbeat once starved it past
//! the lease, so a long copy was taken over again and again.

pub mod export;
pub mod import;
mod pages;
pub mod relocate;
pub mod sweep;

use crate::control::Services;
use crate::error::Error;
use chrono::Utc;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tenantry::JobId;
use tenantry::audit::NewAuditEntry;
use tenantry::job::{Claim, Job, JobKind, JobOutcome};
use tenantry::store::StoreError;
use tokio::sync::watch;

/// Runs of one job before a failing one is given up (deletions never are).
const MAX_ATTEMPTS: u32 = 5;
/// How often an idle worker looks at the queue without being woken (jobs
/// queued by another instance, or due after a backoff).
const IDLE_POLL: Duration = Duration::from_secs(1);

/// Why a run did not succeed.
#[derive(Debug)]
pub enum JobError {
    /// The job cannot succeed (bad input, a precondition): it fails.
    Fatal(String),
    /// Worth another run later (a database away, a sealed copy).
    Transient(String),
    /// The server is stopping: back to the queue, to run again at once.
    Interrupted,
}

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobError::Fatal(m) | JobError::Transient(m) => f.write_str(m),
            JobError::Interrupted => f.write_str("interrupted: the server stopped"),
        }
    }
}

impl From<Error> for JobError {
    fn from(e: Error) -> Self {
        match e {
            Error::Unavailable(m) => JobError::Transient(m),
            Error::Sealed => JobError::Transient(e.to_string()),
            Error::Validation(errors) => JobError::Fatal(
                errors
                    .iter()
                    .map(|f| format!("{}: {}", f.field, f.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            Error::Internal(m) => JobError::Fatal(m),
            other => JobError::Fatal(other.to_string()),
        }
    }
}

impl From<StoreError> for JobError {
    fn from(e: StoreError) -> Self {
        Error::from(e).into()
    }
}

impl From<std::io::Error> for JobError {
    fn from(e: std::io::Error) -> Self {
        JobError::Transient(format!("file: {e}"))
    }
}

pub type JobResult<T> = Result<T, JobError>;

/// One run of a job: what it works with, and how it reports.
pub struct Run<'a> {
    pub services: &'a Services,
    pub job: Job,
    pub(super) worker: String,
    progress: Arc<Mutex<f64>>,
}

impl Run<'_> {
    /// Progress shown from the next heartbeat on.
    pub fn set_progress(&self, p: f64) {
        *self.progress.lock().unwrap_or_else(|e| e.into_inner()) = p.clamp(0.0, 0.999);
    }

    /// Stores where a resumed run picks up, now.
    pub async fn checkpoint(&mut self, state: Value) -> JobResult<()> {
        let progress = *self.progress.lock().unwrap_or_else(|e| e.into_inner());
        let held = self
            .services
            .core
            .store
            .heartbeat_job(
                self.job.id,
                &self.worker,
                self.services.core.clock.now(),
                progress,
                Some(&state),
            )
            .await?;
        if !held {
            return Err(JobError::Transient(
                "another worker took the job over".into(),
            ));
        }
        self.job.state = state;
        Ok(())
    }

    /// The audit entry of what this job does, in the name of who asked for it.
    pub fn audit(&self, action: &str, resource: impl Into<String>) -> NewAuditEntry {
        let scope = self
            .job
            .params
            .get("actor_scope")
            .and_then(Value::as_str)
            .unwrap_or("platform");
        let mut entry = NewAuditEntry::new(self.job.created_by.clone(), scope, action, resource);
        entry.request_id = Some(format!("job:{}", self.job.id));
        entry
    }

    /// Whether the worker gives the job up if this run fails transiently
    /// too (a job that holds something, a seal, releases it then).
    pub fn is_last_attempt(&self) -> bool {
        self.job.attempts >= MAX_ATTEMPTS && self.job.kind != JobKind::Delete
    }

    /// This run's params as `T`.
    pub fn params<T: serde::de::DeserializeOwned>(&self) -> JobResult<T> {
        serde_json::from_value(self.job.params.clone())
            .map_err(|e| JobError::Fatal(format!("bad job params: {e}")))
    }
}

/// Starts `n` workers; they stop (handing their jobs back to the queue)
/// when `stop` turns true. The handle resolves once all have stopped.
pub fn spawn_workers(
    services: Arc<Services>,
    n: usize,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let workers: Vec<_> = (0..n)
        .map(|i| {
            let worker = format!(
                "{}/{}/{i}",
                services.tenants.jobs.node,
                uuid::Uuid::new_v4()
            );
            tokio::spawn(work(services.clone(), worker, stop.clone()))
        })
        .collect();
    tokio::spawn(async move {
        for w in workers {
            let _ = w.await;
        }
    })
}

async fn work(services: Arc<Services>, worker: String, mut stop: watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        match claim(&services, &worker, None).await {
            Ok(Some(job)) => {
                let progress = Arc::new(Mutex::new(job.progress));
                run(&services, &worker, job, progress, &mut stop).await;
                continue;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "claiming a job failed; will retry"),
        }
        tokio::select! {
            _ = services.tenants.jobs.wake.notified() => {}
            _ = tokio::time::sleep(IDLE_POLL) => {}
            _ = stop.changed() => {}
        }
    }
}

async fn claim(
    services: &Services,
    worker: &str,
    only: Option<JobId>,
) -> Result<Option<Job>, StoreError> {
    let lease = chrono::Duration::from_std(services.tenants.jobs.lease)
        .unwrap_or_else(|_| chrono::Duration::seconds(30));
    services
        .core
        .store
        .claim_job(&Claim {
            worker,
            node: &services.tenants.jobs.node,
            now: services.core.clock.now(),
            lease,
            only,
        })
        .await
}

/// Runs one claimed job to its outcome, heartbeating meanwhile. A lost
/// lease stops the run without an outcome (the new holder gives it one); a
/// stop hands the job back to the queue.
async fn run(
    services: &Arc<Services>,
    worker: &str,
    job: Job,
    progress: Arc<Mutex<f64>>,
    stop: &mut watch::Receiver<bool>,
) {
    let (id, kind, attempts) = (job.id, job.kind, job.attempts);
    tracing::info!(job_id = %id, kind = kind.as_str(), tenant_id = %job.tenant_id, attempt = attempts, "job started");
    let mut run = Run {
        services,
        job,
        worker: worker.to_owned(),
        progress: progress.clone(),
    };
    let outcome = if attempts > MAX_ATTEMPTS && kind != JobKind::Delete {
        Err(JobError::Fatal(format!(
            "gave up after {MAX_ATTEMPTS} interrupted runs"
        )))
    } else {
        // A task of its own: the job's statements may run for long without
        // yielding (SQLite's run on the async thread), and a heartbeat
        // polled alongside them would miss its lease.
        let mut beat = tokio::spawn(heartbeat(services.clone(), id, worker.to_owned(), progress));
        let outcome = tokio::select! {
            outcome = execute(&mut run) => outcome,
            _ = &mut beat => {
                tracing::warn!(job_id = %id, "job lease lost; another worker has it");
                return;
            }
            _ = stop.changed() => Err(JobError::Interrupted),
        };
        beat.abort();
        outcome
    };
    let now = services.core.clock.now();
    let outcome = match outcome {
        Ok(result_url) => JobOutcome::Succeeded { result_url },
        Err(JobError::Interrupted) => JobOutcome::Retry {
            error: JobError::Interrupted.to_string(),
            run_after: now,
        },
        // A deletion is retried until it succeeds: a tenant is never left half purged.
        Err(JobError::Transient(error) | JobError::Fatal(error)) if kind == JobKind::Delete => {
            retry(error, attempts, now)
        }
        Err(JobError::Transient(error)) if attempts < MAX_ATTEMPTS => retry(error, attempts, now),
        Err(JobError::Transient(error) | JobError::Fatal(error)) => JobOutcome::Failed { error },
    };
    match &outcome {
        JobOutcome::Succeeded { .. } => tracing::info!(job_id = %id, "job succeeded"),
        JobOutcome::Failed { error } => tracing::warn!(job_id = %id, %error, "job failed"),
        JobOutcome::Retry { error, .. } => {
            tracing::warn!(job_id = %id, %error, "job will be retried")
        }
    }
    if let Err(e) = services
        .core
        .store
        .finish_job(id, worker, now, &outcome)
        .await
    {
        // The lease runs out and the job is claimed again.
        tracing::warn!(error = %e, "recording a job's outcome failed");
    }
}

/// Back to the queue, after an exponential backoff (at most a minute).
fn retry(error: String, attempts: u32, now: chrono::DateTime<Utc>) -> JobOutcome {
    JobOutcome::Retry {
        error,
        run_after: now + chrono::Duration::seconds(2i64.saturating_pow(attempts.min(6))),
    }
}

/// Renews the job's lease every third of it; returns once the lease is lost.
async fn heartbeat(services: Arc<Services>, id: JobId, worker: String, progress: Arc<Mutex<f64>>) {
    loop {
        tokio::time::sleep(services.tenants.jobs.lease / 3).await;
        let p = *progress.lock().unwrap_or_else(|e| e.into_inner());
        match services
            .core
            .store
            .heartbeat_job(id, &worker, services.core.clock.now(), p, None)
            .await
        {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => tracing::warn!(error = %e, "job heartbeat failed; will retry"),
        }
    }
}

async fn execute(run: &mut Run<'_>) -> JobResult<Option<String>> {
    match run.job.kind {
        JobKind::Export => export::run(run).await,
        JobKind::Import => import::run(run).await,
        JobKind::Move => relocate::run(run).await,
        JobKind::Delete => sweep::run(run).await,
    }
}

/// Runs `id` in this process until it has finished (the CLI: no server may
/// be running to take it), or until a server's worker that claimed it first
/// has finished it. `on_progress` sees the progress as it moves.
pub async fn run_to_end(
    services: &Arc<Services>,
    id: JobId,
    mut on_progress: impl FnMut(f64),
) -> anyhow::Result<Job> {
    let worker = format!(
        "{}/cli/{}",
        services.tenants.jobs.node,
        uuid::Uuid::new_v4()
    );
    let (_keep, mut never) = watch::channel(false);
    loop {
        if let Some(job) = claim(services, &worker, Some(id)).await? {
            let progress = Arc::new(Mutex::new(job.progress));
            let watcher = progress.clone();
            let work = run(services, &worker, job, progress, &mut never);
            tokio::pin!(work);
            loop {
                tokio::select! {
                    () = &mut work => break,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {
                        on_progress(*watcher.lock().unwrap_or_else(|e| e.into_inner()));
                    }
                }
            }
        }
        let job = services
            .core
            .store
            .job(id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("job {id} vanished"))?;
        on_progress(job.progress);
        if job.status.is_finished() {
            return Ok(job);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
