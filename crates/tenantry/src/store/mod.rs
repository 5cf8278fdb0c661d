//! Storage traits. Per-tenant operations take a resolved [`Tenant`], never a
//! bare id, so the only way to reach a tenant's rows is through the tenant the
//! control store itself handed out.

pub mod data;
pub mod identity;
mod listing;
pub mod migrate;
pub mod postgres;
pub mod sqlite;
pub mod write_plan;

pub use crate::timestamp::time_text;
pub use data::{DataPlane, GroupCounts, Restore, TenantData, Usage};
pub use identity::{IdentityStore, OtpRecord, RefreshRecord, TenantUser, UserChange};

use crate::Role;
use crate::audit::{AuditFilter, NewAuditEntry};
use crate::ids::{JobId, OrgId, TenantId, UserId};
use crate::job::{Claim, Job, JobFilter, JobOutcome};
use crate::plan::Plan;
use crate::tenant::{Isolation, Tenant, TenantStatus};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// The storage layer's error. Callers map it once, at their own edge.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was broken; the payload names the field.
    #[error("conflict on {0}")]
    Conflict(String),
    /// The database could not be reached (or timed out): retry later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The row to change does not exist.
    #[error("not found")]
    NotFound,
    /// The row changed since the caller read it.
    #[error("version mismatch")]
    VersionMismatch,
    /// The write would take the tenant past its storage quota.
    #[error("storage quota exceeded")]
    QuotaExceeded,
    /// This copy of the tenant's data takes no writes: a move, an import or a
    /// deletion sealed it. The caller looks the tenant up again (it may have
    /// moved) and retries, or waits.
    #[error("the tenant's data is sealed")]
    Sealed,
    /// This copy of the tenant's data does not exist (never provisioned,
    /// moved away or purged): look the tenant up again.
    #[error("the tenant's data is not here")]
    Absent,
    /// The schema is behind the binary: `tenantry migrate` brings it up to date.
    #[error("migrations pending: {0}")]
    Pending(String),
    /// Stored data that cannot be decoded, or any other unexpected failure.
    #[error("storage failure: {0}")]
    Internal(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A platform user: super-admin or organization admin.
#[derive(Clone, Debug)]
pub struct PlatformUser {
    pub id: UserId,
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub role: Role,
    pub organization_id: Option<OrgId>,
    pub created_at: DateTime<Utc>,
}

/// An organization: an enterprise that groups several tenants.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Organization {
    pub id: OrgId,
    pub name: String,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// One stored configuration value of a tenant.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigEntry {
    pub key: String,
    /// Plain JSON, or for encrypted entries the sealed value as a JSON string.
    pub value: serde_json::Value,
    pub encrypted: bool,
    pub updated_at: DateTime<Utc>,
}

/// What one step of an import writes to the control store (`import_control`).
#[derive(Clone, Debug, Default)]
pub struct ControlImport {
    /// Users as exported (ids, hashes and times kept; no quota).
    pub users: Vec<TenantUser>,
    /// Config entries as exported (sealed values sealed for this tenant).
    pub config: Vec<ConfigEntry>,
    /// Request counts added to the tenant's days.
    pub counts: Vec<(chrono::NaiveDate, u64)>,
    /// Exported control-chain entries linked onto the tenant's own chain
    /// (new ids and hashes, original fields and times).
    pub relink: Vec<(NewAuditEntry, DateTime<Utc>)>,
    /// The tenant's restored fields: name, metadata, branding.
    pub fields: Option<Tenant>,
    /// Appended last: the import's own entry.
    pub audit: Option<NewAuditEntry>,
}

/// What a PATCH of a tenant sets; `None` leaves a field as it is, so
/// concurrent PATCHes of different fields both take effect.
#[derive(Clone, Debug, Default)]
pub struct TenantChange {
    pub slug: Option<crate::Slug>,
    pub name: Option<String>,
    pub plan: Option<String>,
    pub domain: Option<Option<String>>,
    pub metadata: Option<serde_json::Value>,
    pub branding: Option<serde_json::Value>,
    pub updated_at: DateTime<Utc>,
}

/// Keyset pagination: items strictly after `after`, ordered by id.
#[derive(Clone, Debug, Default)]
pub struct PageRequest {
    pub after: Option<Uuid>,
    pub limit: u32,
}

/// Filters of the tenant listing.
#[derive(Clone, Debug, Default)]
pub struct TenantFilter {
    pub status: Option<TenantStatus>,
    pub plan: Option<String>,
    pub organization_id: Option<OrgId>,
    /// Case-insensitive substring of name or slug.
    pub q: Option<String>,
}

/// The control plane's tenants: their records, placement, configuration
/// and request counts.
#[async_trait]
pub trait ControlStore: Send + Sync + 'static {
    /// Cheap round trip, for readiness.
    async fn ping(&self) -> StoreResult<()>;

    // Every mutation takes the audit entry that records it and appends it in
    // the same transaction (platform events to the platform chain, tenant
    // events to the tenant's control chain).

    /// Inserts a tenant together with its wrapped data-encryption key.
    async fn insert_tenant(
        &self,
        tenant: &Tenant,
        wrapped_key: &[u8],
        audit: &NewAuditEntry,
    ) -> StoreResult<()>;
    /// A live (active or suspended) tenant by id.
    async fn tenant_by_id(&self, id: TenantId) -> StoreResult<Option<Tenant>>;
    /// A tenant by id whatever its status (jobs finish deletions with it).
    async fn tenant_any(&self, id: TenantId) -> StoreResult<Option<Tenant>>;
    /// A live tenant by slug.
    async fn tenant_by_slug(&self, slug: &str) -> StoreResult<Option<Tenant>>;
    /// A live tenant by custom domain.
    async fn tenant_by_domain(&self, domain: &str) -> StoreResult<Option<Tenant>>;
    async fn list_tenants(
        &self,
        filter: &TenantFilter,
        page: &PageRequest,
    ) -> StoreResult<Vec<Tenant>>;
    /// Writes the fields `change` sets of a live tenant in one statement,
    /// nothing else (not its status, tier or placement, which have their own
    /// writers): the tenant as it is after; `NotFound` if it was deleted.
    async fn change_tenant(
        &self,
        tenant: TenantId,
        change: &TenantChange,
        audit: &NewAuditEntry,
    ) -> StoreResult<Tenant>;
    /// Changes the status of a live tenant; `NotFound` if it was deleted.
    async fn set_tenant_status(
        &self,
        tenant: &Tenant,
        status: TenantStatus,
        now: DateTime<Utc>,
        audit: &NewAuditEntry,
    ) -> StoreResult<()>;
    /// Starts a deletion in one transaction: a live tenant becomes
    /// `deleting` (its slug and domain free at once), its queued jobs fail
    /// and `job`, its purge, is queued. `NotFound` if it is not live;
    /// `Conflict("job")` while one of its jobs runs.
    async fn mark_tenant_deleting(
        &self,
        tenant: &Tenant,
        job: &Job,
        audit: &NewAuditEntry,
    ) -> StoreResult<()>;
    /// Finishes a deletion: removes everything a `deleting` tenant owns in
    /// the control store but its audit chain and tombstone row — its data
    /// key too, so whatever encrypted value survives anywhere is unreadable
    /// — and marks it `deleted` (the data plane is purged before).
    async fn purge_tenant(&self, tenant: &Tenant, audit: &NewAuditEntry) -> StoreResult<()>;
    /// Points a live tenant's data at its new home (`to.isolation`,
    /// `to.placement`) if it is still where `from` says: a move's switch.
    /// `NotFound` if it was deleted or moved meanwhile.
    async fn relocate_tenant(
        &self,
        from: &Tenant,
        to: &Tenant,
        audit: &NewAuditEntry,
    ) -> StoreResult<()>;

    async fn tenant_wrapped_key(&self, tenant: &Tenant) -> StoreResult<Vec<u8>>;

    /// Live tenants per placement server (`None`: the main database).
    async fn placement_counts(&self) -> StoreResult<Vec<(Option<String>, u64)>>;

    /// Live dedicated tenants whose own database is behind `version`.
    async fn dedicated_behind(&self, version: i64) -> StoreResult<Vec<Tenant>>;
    /// Records the tenant-data schema version of a dedicated tenant's database
    /// (a new dedicated tenant starts at the version its database was created with).
    async fn set_schema_version(&self, tenant: &Tenant, version: i64) -> StoreResult<()>;

    /// Adds batched request counts: `(tenant, UTC day, requests)`, and
    /// answers each row's total after the addition (every instance's counts),
    /// in the same shape; rows of a tenant deleted since are dropped.
    async fn add_request_counts(
        &self,
        counts: &[(TenantId, chrono::NaiveDate, u64)],
    ) -> StoreResult<Vec<(TenantId, chrono::NaiveDate, u64)>>;
    /// The tenant's request counts for the days in `from..=to` that have any.
    async fn request_counts(
        &self,
        tenant: &Tenant,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    ) -> StoreResult<Vec<(chrono::NaiveDate, u64)>>;
    async fn list_config(&self, tenant: &Tenant) -> StoreResult<Vec<ConfigEntry>>;
    async fn config(&self, tenant: &Tenant, key: &str) -> StoreResult<Option<ConfigEntry>>;
    async fn put_config(
        &self,
        tenant: &Tenant,
        entry: &ConfigEntry,
        audit: &NewAuditEntry,
    ) -> StoreResult<()>;
    /// True when something was deleted (and audited).
    async fn delete_config(
        &self,
        tenant: &Tenant,
        key: &str,
        audit: &NewAuditEntry,
    ) -> StoreResult<bool>;

    // Jobs.

    // Imports.
}

/// The platform's own records: its users (staff), plans and organizations.
/// Each mutation appends its audit entry to the platform chain in the same
/// transaction.
#[async_trait]
pub trait PlatformStore: Send + Sync + 'static {
    async fn insert_platform_user(
        &self,
        user: &PlatformUser,
        audit: &NewAuditEntry,
    ) -> StoreResult<()>;

    async fn platform_user_by_email(&self, email: &str) -> StoreResult<Option<PlatformUser>>;

    async fn platform_user(&self, id: UserId) -> StoreResult<Option<PlatformUser>>;

    async fn count_super_admins(&self) -> StoreResult<u64>;

    async fn list_plans(&self) -> StoreResult<Vec<Plan>>;

    async fn plan(&self, code: &str) -> StoreResult<Option<Plan>>;

    /// Inserts or replaces a plan; true when it was new.
    async fn upsert_plan(&self, plan: &Plan, audit: &NewAuditEntry) -> StoreResult<bool>;

    /// Inserts the plans that are missing, leaving edited ones alone.
    async fn seed_plans(&self, plans: &[Plan]) -> StoreResult<()>;

    async fn insert_org(&self, org: &Organization, audit: &NewAuditEntry) -> StoreResult<()>;

    async fn org(&self, id: OrgId) -> StoreResult<Option<Organization>>;

    async fn list_orgs(
        &self,
        only: Option<OrgId>,
        page: &PageRequest,
    ) -> StoreResult<Vec<Organization>>;
}

/// The durable job queue, and the control-store steps jobs take inside a
/// job's own transaction.
#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Queues a job for a live tenant, recording `audit` in its chain;
    /// `Conflict("job")` when the tenant has an unfinished job already.
    async fn insert_job(
        &self,
        tenant: &Tenant,
        job: &Job,
        audit: &NewAuditEntry,
    ) -> StoreResult<()>;

    async fn job(&self, id: JobId) -> StoreResult<Option<Job>>;

    /// Newest first; the page cursor is a job id.
    async fn list_jobs(&self, filter: &JobFilter, page: &PageRequest) -> StoreResult<Vec<Job>>;

    /// Takes the oldest claimable job atomically (queued and due, or
    /// running on a lease that ran out), marking it running for `claim.worker`.
    async fn claim_job(&self, claim: &Claim<'_>) -> StoreResult<Option<Job>>;

    /// Records progress (and a new `state`, when given) of a job `worker`
    /// still holds; false when it holds it no more (its lease was taken over).
    async fn heartbeat_job(
        &self,
        id: JobId,
        worker: &str,
        now: DateTime<Utc>,
        progress: f64,
        state: Option<&serde_json::Value>,
    ) -> StoreResult<bool>;

    /// Ends a run of a job `worker` holds; false when it holds it no more.
    async fn finish_job(
        &self,
        id: JobId,
        worker: &str,
        now: DateTime<Utc>,
        outcome: &JobOutcome,
    ) -> StoreResult<bool>;

    /// One step of an import's control-store part, in one transaction
    /// together with the job's new `state`: a resumed import knows exactly
    /// what was written. `NotFound` if the tenant is not live; `Conflict`
    /// on a duplicate user; `Unavailable` if `worker` lost the job.
    async fn import_control(
        &self,
        tenant: &Tenant,
        job: JobId,
        worker: &str,
        now: DateTime<Utc>,
        state: &serde_json::Value,
        step: &ControlImport,
    ) -> StoreResult<()>;

    /// Undoes an import that failed midway: removes the users and config
    /// keys it wrote.
    async fn undo_restore(
        &self,
        tenant: &Tenant,
        users: &[UserId],
        config_keys: &[String],
    ) -> StoreResult<()>;
}

/// The whole store: control plane and identity, one backend.
pub trait Store: ControlStore + PlatformStore + JobStore + IdentityStore {}
impl<T: ControlStore + PlatformStore + JobStore + IdentityStore> Store for T {}

/// The field a broken uniqueness rule names, read from what the engine
/// reports: PostgreSQL's constraint name (`<table>_<field>`, or
/// `<table>_pkey`), SQLite's message (`UNIQUE constraint failed:
/// <table>.<field>`, or `index '<table>_<field>'`). Every unique index of
/// both schemas is named so that its last word is the field.
pub(crate) fn conflict_field(reported: Option<&str>) -> String {
    match reported.and_then(|r| r.rsplit(['.', '_', '\'', ' ']).find(|w| !w.is_empty())) {
        Some("pkey") | None => "id".to_owned(),
        Some(field) => field.to_owned(),
    }
}

/// An audit listing's conditions after `WHERE <the chain>`, on either
/// engine: the filter, the seq cursor, link order and the page size.
pub(crate) fn push_audit_page<'a, DB>(
    q: &mut sqlx::QueryBuilder<'a, DB>,
    filter: &AuditFilter,
    after_seq: i64,
    limit: u32,
) where
    DB: sqlx::Database,
    String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    DateTime<Utc>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    if let Some(actor) = &filter.actor {
        q.push(" AND actor = ").push_bind(actor.clone());
    }
    if let Some(action) = &filter.action {
        q.push(" AND action = ").push_bind(action.clone());
    }
    if let Some(since) = filter.since {
        q.push(" AND at >= ").push_bind(since);
    }
    q.push(" AND seq > ")
        .push_bind(after_seq)
        .push(" ORDER BY seq LIMIT ")
        .push_bind(i64::from(limit.max(1)));
}

/// Parses what `time_text` wrote.
pub fn parse_time(s: &str) -> StoreResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Internal(format!("bad timestamp {s:?}: {e}")))
}

/// `QuotaExceeded` when growing by `delta` bytes takes `current` past `max`
/// (shrinking is always allowed).
pub(crate) fn check_quota(current: u64, delta: i64, max: Option<u64>) -> StoreResult<()> {
    match max {
        Some(max) if delta > 0 && current.saturating_add(delta as u64) > max => {
            Err(StoreError::QuotaExceeded)
        }
        _ => Ok(()),
    }
}

/// How a job's outcome is stored: status, progress (`None`: unchanged),
/// result url, error and the time it may run again.
pub(crate) fn outcome_columns(
    outcome: &JobOutcome,
    now: DateTime<Utc>,
) -> (
    crate::job::JobStatus,
    Option<f64>,
    Option<String>,
    Option<String>,
    DateTime<Utc>,
) {
    use crate::job::JobStatus as S;
    match outcome {
        JobOutcome::Succeeded { result_url } => {
            (S::Succeeded, Some(1.0), result_url.clone(), None, now)
        }
        JobOutcome::Failed { error } => (S::Failed, None, None, Some(error.clone()), now),
        JobOutcome::Retry { error, run_after } => {
            (S::Queued, None, None, Some(error.clone()), *run_after)
        }
    }
}

/// A page's row limit as SQL binds it (at least one row).
pub(crate) fn page_limit(page: &PageRequest) -> i64 {
    i64::from(page.limit.max(1))
}

/// A stored JSON list of names (unique or indexed fields).
pub(crate) fn strings(v: serde_json::Value) -> Vec<String> {
    serde_json::from_value(v).unwrap_or_default()
}

/// `%text%` for `LIKE … ESCAPE '\'`, lower-cased, with the search text's own
/// wildcards escaped: the tenant search `q` is a substring, not a pattern.
pub(crate) fn substring_pattern(text: &str) -> String {
    let escaped = text
        .to_lowercase()
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// Parses a stored enum column, turning garbage into an internal error.
pub(crate) fn decode<T>(
    value: &str,
    parse: impl Fn(&str) -> Option<T>,
    what: &str,
) -> StoreResult<T> {
    parse(value).ok_or_else(|| StoreError::Internal(format!("bad {what} in store: {value:?}")))
}

pub(crate) fn isolation(value: &str) -> StoreResult<Isolation> {
    decode(value, Isolation::parse, "isolation")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_name_the_field_on_both_engines() {
        let cases = [
            (Some("tenants_slug"), "slug"),
            (Some("tenants_pkey"), "id"),
            (Some("UNIQUE constraint failed: tenants.slug"), "slug"),
            (
                Some("UNIQUE constraint failed: users.tenant_id, users.email"),
                "email",
            ),
            (Some("index 'tenants_domain'"), "domain"),
            (None, "id"),
        ];
        for (reported, field) in cases {
            assert_eq!(conflict_field(reported), field, "{reported:?}");
        }
    }
}
