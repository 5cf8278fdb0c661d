//! Durable background jobs: exports, imports, moves and deletions of one
//! tenant each. A job row lives in the control store; workers claim it
//! atomically, heartbeat while they run it, and a job whose worker died
//! (its heartbeat older than the lease) is claimed again, so no job stays
//! `running` for ever. At most one unfinished job exists per tenant: two
//! jobs never work on the same tenant's data at once.

use crate::ids::{JobId, TenantId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a job does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Export,
    Import,
    Move,
    Delete,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Export => "export",
            JobKind::Import => "import",
            JobKind::Move => "move",
            JobKind::Delete => "delete",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "export" => JobKind::Export,
            "import" => JobKind::Import,
            "move" => JobKind::Move,
            "delete" => JobKind::Delete,
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => JobStatus::Queued,
            "running" => JobStatus::Running,
            "succeeded" => JobStatus::Succeeded,
            "failed" => JobStatus::Failed,
            _ => return None,
        })
    }

    pub fn is_finished(self) -> bool {
        matches!(self, JobStatus::Succeeded | JobStatus::Failed)
    }
}

/// One job, as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub id: JobId,
    /// The tenant the job works on: it runs through that tenant's handles only.
    pub tenant_id: TenantId,
    pub kind: JobKind,
    pub status: JobStatus,
    /// 0.0 to 1.0.
    pub progress: f64,
    /// What was asked (format, target tier, the uploaded file…).
    pub params: Value,
    /// Where a resumed run picks up (a move's phase, an import's step).
    pub state: Value,
    /// Relative path of the job's result (an export's download).
    pub result_url: Option<String>,
    pub error: Option<String>,
    /// Runs started so far (a run cut short by a crash counts).
    pub attempts: u32,
    pub heartbeat_at: Option<DateTime<Utc>>,
    /// The worker running it now (or last).
    pub worker: Option<String>,
    /// Only workers of this node may run it (its input file lives in that
    /// node's data dir); `None`: any node.
    pub node: Option<String>,
    /// Not claimed before this time (a retry's backoff).
    pub run_after: DateTime<Utc>,
    /// Who asked for it, as the audit log names actors.
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Job {
    /// A queued job, to be inserted.
    pub fn queued(
        tenant_id: TenantId,
        kind: JobKind,
        params: Value,
        created_by: impl Into<String>,
        node: Option<String>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            id: JobId::new(),
            tenant_id,
            kind,
            status: JobStatus::Queued,
            progress: 0.0,
            params,
            state: Value::Null,
            result_url: None,
            error: None,
            attempts: 0,
            heartbeat_at: None,
            worker: None,
            node,
            run_after: now,
            created_by: created_by.into(),
            created_at: now,
            updated_at: now,
        }
    }
}

/// Filters of the job listing (combined with AND).
#[derive(Clone, Debug, Default)]
pub struct JobFilter {
    pub tenant: Option<TenantId>,
    /// Jobs of this organization's tenants only.
    pub organization: Option<crate::ids::OrgId>,
    pub status: Option<JobStatus>,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq)]
pub enum JobOutcome {
    Succeeded {
        result_url: Option<String>,
    },
    Failed {
        error: String,
    },
    /// Back to the queue, claimable again from `run_after` (a transient
    /// failure; a deletion is retried until it succeeds).
    Retry {
        error: String,
        run_after: DateTime<Utc>,
    },
}

/// A worker's claim: who claims, when, and which jobs it may take.
#[derive(Clone, Debug)]
pub struct Claim<'a> {
    pub worker: &'a str,
    pub node: &'a str,
    pub now: DateTime<Utc>,
    /// A running job whose heartbeat is older than `now - lease` is taken over.
    pub lease: chrono::Duration,
    /// Only this job (the CLI runs the job it queued).
    pub only: Option<JobId>,
}
