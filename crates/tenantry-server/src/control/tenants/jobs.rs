//! Jobs as the API and the CLI see them: who may start, see and download
//! them. The work itself is in `crate::jobs`.

use crate::control::{Tenants, audit_entry};
use crate::error::{Error, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;
use tenantry::job::{Job, JobFilter, JobKind, JobStatus};
use tenantry::portable::DataType;
use tenantry::store::{PageRequest, StoreError};
use tenantry::{Isolation, JobId, Principal, Role, Tenant, TenantId};

/// A job as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobView {
    pub id: JobId,
    pub tenant_id: TenantId,
    pub kind: JobKind,
    pub status: JobStatus,
    /// 0.0 to 1.0.
    pub progress: f64,
    /// Relative path of the result (an export's download), once succeeded.
    pub result_url: Option<String>,
    pub error: Option<String>,
    /// Runs started so far; more than one after a crash or a retry.
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Job> for JobView {
    fn from(j: Job) -> Self {
        Self {
            id: j.id,
            tenant_id: j.tenant_id,
            kind: j.kind,
            status: j.status,
            progress: j.progress,
            result_url: j.result_url,
            error: j.error,
            attempts: j.attempts,
            created_at: j.created_at,
            updated_at: j.updated_at,
        }
    }
}

/// `202 {job_id}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobAccepted {
    pub job_id: JobId,
}

/// The file format of an export.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    /// A header line, then one JSON item per line.
    #[default]
    Ndjson,
    /// One JSON document `{"header": {...}, "items": [...]}`.
    Json,
}

impl ExportFormat {
    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Ndjson => "ndjson",
            ExportFormat::Json => "json",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Ndjson => "application/x-ndjson",
            ExportFormat::Json => "application/json",
        }
    }
}

/// Body of `POST /api/v1/tenants/{id}/export`.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    /// What to include; everything when absent.
    pub data_types: Option<Vec<DataType>>,
    #[serde(default)]
    pub format: ExportFormat,
}

/// Body of `POST /api/v1/tenants/{id}/move`: where the tenant's data goes.
#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    /// The tier to move to; the current one when absent.
    pub isolation: Option<Isolation>,
    /// A `[[placement.servers]]` name (PostgreSQL); the current server when absent.
    pub server: Option<String>,
}

/// Filters of `GET /api/v1/jobs`.
#[derive(Debug, Default)]
pub struct JobQuery {
    pub tenant: Option<String>,
    pub status: Option<JobStatus>,
}

/// What an import job is given.
#[derive(Debug, Serialize, Deserialize)]
pub struct ImportParams {
    /// The file, on this node.
    pub file: PathBuf,
    /// Remove the file when the job ends (an upload).
    #[serde(default)]
    pub remove_file: bool,
}

impl Tenants {
    /// Queues a job for `tenant` on behalf of `actor` (`node`: only this
    /// node may run it), recording `action` in the tenant's audit chain.
    pub async fn enqueue(
        &self,
        actor: &Principal,
        tenant: &Tenant,
        kind: JobKind,
        params: Value,
        node: Option<String>,
    ) -> Result<Job> {
        let job = self.new_job(actor, tenant, kind, params, node);
        let audit = audit_entry(
            actor,
            &format!("tenant.{}", kind.as_str()),
            format!("tenants/{}/jobs/{}", tenant.id, job.id),
        );
        self.core
            .store
            .insert_job(tenant, &job, &audit)
            .await
            .map_err(job_conflict)?;
        self.jobs.wake.notify_waiters();
        Ok(job)
    }

    /// A queued job; `params` gain the actor's scope (its audit entries name it).
    pub(crate) fn new_job(
        &self,
        actor: &Principal,
        tenant: &Tenant,
        kind: JobKind,
        mut params: Value,
        node: Option<String>,
    ) -> Job {
        if let Value::Object(map) = &mut params {
            map.insert(
                "actor_scope".into(),
                json!(crate::control::actor_scope(actor)),
            );
        }
        Job::queued(
            tenant.id,
            kind,
            params,
            actor.user_id.to_string(),
            node,
            self.core.clock.now(),
        )
    }

    /// A job `actor` may see: super-admins all, org admins their
    /// organization's tenants', tenant admins their own tenant's. Any other
    /// is unknown (404), like one that never existed.
    pub async fn visible_job(&self, actor: &Principal, id: JobId) -> Result<Job> {
        let unknown = || Error::NotFound("job".into());
        let job = self.core.store.job(id).await?.ok_or_else(unknown)?;
        let tenant = self
            .core
            .store
            .tenant_any(job.tenant_id)
            .await?
            .ok_or_else(unknown)?;
        if may_see_jobs_of(actor, &tenant) {
            Ok(job)
        } else {
            Err(unknown())
        }
    }

    pub async fn list_jobs(
        &self,
        actor: &Principal,
        query: JobQuery,
        page: &PageRequest,
    ) -> Result<Vec<Job>> {
        let mut filter = JobFilter {
            tenant: None,
            organization: None,
            status: query.status,
        };
        if let Some(t) = &query.tenant {
            let tenant = match t.parse::<TenantId>() {
                Ok(id) => self.core.store.tenant_any(id).await?,
                Err(_) => self.core.find_tenant(t).await?,
            };
            match tenant {
                Some(tenant) if may_see_jobs_of(actor, &tenant) => filter.tenant = Some(tenant.id),
                _ => return Ok(Vec::new()),
            }
        }
        match actor.role {
            Role::SuperAdmin => {}
            Role::OrgAdmin => {
                filter.organization = Some(
                    actor
                        .org_id
                        .ok_or(Error::Forbidden("no organization".into()))?,
                )
            }
            Role::Admin => {
                filter.tenant = Some(
                    actor
                        .tenant_id
                        .ok_or(Error::Forbidden("no tenant".into()))?,
                )
            }
            _ => return Err(Error::Forbidden("admins only".into())),
        }
        if filter
            .tenant
            .is_some_and(|t| actor.tenant_id.is_some_and(|own| own != t))
        {
            return Ok(Vec::new());
        }
        Ok(self.core.store.list_jobs(&filter, page).await?)
    }

    /// Waits (bounded) until the job has finished; the job as it is then.
    pub async fn wait_for_job(&self, id: JobId, timeout: Duration) -> Result<Job> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let job = self
                .core
                .store
                .job(id)
                .await?
                .ok_or_else(|| Error::NotFound("job".into()))?;
            if job.status.is_finished() || tokio::time::Instant::now() >= deadline {
                return Ok(job);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Queues an export of everything the tenant owns (or `data_types`).
    pub async fn start_export(
        &self,
        actor: &Principal,
        id_or_slug: &str,
        request: ExportRequest,
    ) -> Result<Job> {
        let tenant = self.core.administered_tenant(actor, id_or_slug).await?;
        let mut params =
            serde_json::to_value(&request).map_err(|e| Error::Internal(e.to_string()))?;
        if request.data_types.is_none() {
            params["data_types"] = json!(DataType::ALL);
        }
        // The file is written in this node's data dir, and downloaded from it.
        let node = Some(self.jobs.node.clone());
        self.enqueue(actor, &tenant, JobKind::Export, params, node)
            .await
    }

    /// Queues a move of the tenant's data to another tier or server.
    pub async fn start_move(
        &self,
        actor: &Principal,
        id_or_slug: &str,
        request: MoveRequest,
    ) -> Result<Job> {
        let tenant = self.core.administered_tenant(actor, id_or_slug).await?;
        if actor.role != Role::SuperAdmin && request.server.is_some() {
            return Err(Error::Forbidden(
                "only super-admins choose database servers".into(),
            ));
        }
        let target = self.move_target(&tenant, &request)?;
        self.enqueue_move(actor, &tenant, &target).await
    }

    pub(crate) async fn enqueue_move(
        &self,
        actor: &Principal,
        tenant: &Tenant,
        target: &Tenant,
    ) -> Result<Job> {
        let params = json!({
            "isolation": target.isolation,
            "server": target.placement,
        });
        self.enqueue(actor, tenant, JobKind::Move, params, None)
            .await
    }

    /// The tenant as it will be once moved: 422 when the request names no
    /// change or a server that is not configured.
    pub(crate) fn move_target(&self, tenant: &Tenant, request: &MoveRequest) -> Result<Tenant> {
        let mut target = tenant.clone();
        if let Some(isolation) = request.isolation {
            target.isolation = isolation;
        }
        if let Some(server) = &request.server {
            let servers = self.core.data.placement_servers();
            if !servers.iter().any(|s| &s.name == server) {
                let known: Vec<&str> = servers.iter().map(|s| s.name.as_str()).collect();
                return Err(Error::invalid(
                    "server",
                    if known.is_empty() {
                        "this deployment has one database server: [[placement.servers]] lists none"
                            .to_owned()
                    } else {
                        format!("not a configured server (configured: {})", known.join(", "))
                    },
                ));
            }
            target.placement = Some(server.clone());
        }
        if (target.isolation, &target.placement) == (tenant.isolation, &tenant.placement) {
            return Err(Error::invalid(
                "isolation",
                "the tenant's data is there already: name another isolation or server",
            ));
        }
        Ok(target)
    }
}

/// Staff over the tenant, or the tenant's own admins.
fn may_see_jobs_of(actor: &Principal, tenant: &Tenant) -> bool {
    actor.may_administer(tenant.organization_id)
        || (actor.role == Role::Admin && actor.tenant_id == Some(tenant.id))
}

/// A second unfinished job of one tenant: 409, naming why.
pub(crate) fn job_conflict(e: StoreError) -> Error {
    match e {
        StoreError::Conflict(_) => Error::Conflict("an unfinished job of this tenant".into()),
        StoreError::NotFound => Error::TenantNotFound,
        other => other.into(),
    }
}

impl Tenants {
    /// Queues the import of `file` (on this node) into `tenant`.
    pub async fn start_import(
        &self,
        actor: &tenantry::Principal,
        tenant: &tenantry::Tenant,
        file: std::path::PathBuf,
        remove_file: bool,
    ) -> Result<Job> {
        let params = serde_json::to_value(ImportParams { file, remove_file })
            .map_err(|e| Error::Internal(e.to_string()))?;
        self.enqueue(
            actor,
            tenant,
            JobKind::Import,
            params,
            Some(self.jobs.node.clone()),
        )
        .await
    }
}
