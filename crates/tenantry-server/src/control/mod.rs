//! The service layer: every operation, called alike by the HTTP API, the
//! CLI and the job runner. Services check who may do what; handlers only
//! translate HTTP to these calls. One plane a folder or file (`identity/`,
//! `records/`, `tenants/`, `analytics`, `admission`), over what they all
//! read in `core`.

pub mod admission;
pub mod analytics;
mod core;
pub mod identity;
pub mod records;
pub mod tenants;

use crate::auth::TokenKeys;
use crate::auth::guard::LoginGuard;
use crate::auth::otp::OtpSender;
use crate::enforce::concurrency::TenantGate;
use crate::enforce::daily_quota::DailyQuota;
use crate::enforce::rate_limit::RateLimiter;
use crate::error::{Error, Result};
use crate::keys::Keyring;
use std::sync::Arc;
use tenantry::audit::NewAuditEntry;
use tenantry::cache::TtlCache;
use tenantry::clock::Clock;
use tenantry::resolve::TenantResolver;
use tenantry::store::Store;
use tenantry::{Principal, Role, UserId};

/// Every operation, by plane. The HTTP edge, the CLI and the job runner
/// call these; each plane holds the shared core and only what else it needs.
pub struct Services {
    pub core: Arc<Core>,
    /// Sessions, users and their policy, platform staff.
    pub identity: Identity,
    /// The tenant's collections, records and queries.
    pub records: Records,
    /// Statistics, cross-tenant comparison and usage reports.
    pub analytics: Analytics,
    /// Tenants, plans, configuration, organizations, jobs and audit logs.
    pub tenants: Tenants,
    /// Whether a tenant's plan lets a request in now.
    pub admission: Admission,
}

/// What every plane reads: the stores, the tenants as an actor may see
/// them, plans, configuration and features, audit appends, and each
/// tenant's data handle.
pub struct Core {
    pub store: Arc<dyn Store>,
    /// Tenant lookups (cached); every tenant change invalidates it.
    pub resolver: Arc<TenantResolver>,
    /// Tenants' own data, shared or dedicated.
    pub data: Arc<dyn tenantry::store::DataPlane>,
    pub keyring: Keyring,
    pub clock: Arc<dyn Clock>,
    pub caches: Caches,
}

pub struct Identity {
    pub core: Arc<Core>,
    pub tokens: TokenKeys,
    pub login_guard: LoginGuard,
    pub otp_sender: OtpSender,
    /// Keys the OTP code hashes.
    pub otp_key: Vec<u8>,
    pub multi_tenant: bool,
}

pub struct Records {
    pub core: Arc<Core>,
    /// (tenant, collection) → its schema, compiled.
    pub schemas: records::CompiledSchemas,
}

pub struct Analytics {
    pub core: Arc<Core>,
    pub daily_quota: Arc<DailyQuota>,
}

pub struct Tenants {
    pub core: Arc<Core>,
    /// The job queue as this node sees it.
    pub jobs: tenants::queue::JobQueue,
}

pub struct Admission {
    pub core: Arc<Core>,
    pub daily_quota: Arc<DailyQuota>,
    pub tenant_gate: TenantGate,
    /// `None` when rate limits are switched off.
    pub rate_limiter: Option<RateLimiter>,
}

/// Hot-path lookups every request would otherwise repeat. Each entry is
/// invalidated where this process changes it; the short TTL bounds how long
/// another instance's change (or the CLI's) can go unseen.
pub struct Caches {
    /// (tenant, user) → the role of an active user; `None`: gone or inactive.
    pub users: TtlCache<(Option<tenantry::TenantId>, UserId), Option<Role>>,
    /// (tenant, collection) → its definition, if defined.
    pub collections:
        TtlCache<(tenantry::TenantId, String), Option<tenantry::record::CollectionDef>>,
    /// plan code → plan.
    pub plans: TtlCache<String, Option<Arc<tenantry::Plan>>>,
    /// (user, target tenant) of cross-tenant attempts recorded this minute.
    pub cross_tenant_recorded: TtlCache<(UserId, tenantry::TenantId), ()>,
}

impl Default for Caches {
    fn default() -> Self {
        let ttl = std::time::Duration::from_secs(10);
        Self {
            users: TtlCache::new(100_000, ttl),
            collections: TtlCache::new(100_000, ttl),
            plans: TtlCache::new(1_000, ttl),
            cross_tenant_recorded: TtlCache::new(100_000, std::time::Duration::from_secs(60)),
        }
    }
}

/// The operator at the machine's console: the CLI acts with full rights.
pub fn console_operator() -> Principal {
    Principal {
        user_id: UserId(uuid::Uuid::nil()),
        role: Role::SuperAdmin,
        tenant_id: None,
        org_id: None,
    }
}

/// The audit entry for `actor` doing `action` to `resource`, in the request
/// being served (its id is picked up from the request's task).
pub fn audit_entry(actor: &Principal, action: &str, resource: impl Into<String>) -> NewAuditEntry {
    NewAuditEntry::new(
        actor.user_id.to_string(),
        actor_scope(actor),
        action,
        resource,
    )
}

/// Refuses anyone but platform staff (super-admins, org admins).
pub(crate) fn actor_is_platform(actor: &Principal) -> Result<()> {
    if actor.role.is_platform() {
        Ok(())
    } else {
        Err(Error::Forbidden("platform staff only".into()))
    }
}

/// Where an actor's rights come from, as the audit log names it.
pub fn actor_scope(actor: &Principal) -> String {
    match (actor.role, actor.org_id, actor.tenant_id) {
        (Role::SuperAdmin, ..) => "platform".to_owned(),
        (Role::OrgAdmin, Some(org), _) => format!("organization:{org}"),
        (_, _, Some(tenant)) => format!("tenant:{tenant}"),
        _ => "unknown".to_owned(),
    }
}

impl From<tenantry::resolve::ResolveError> for Error {
    fn from(e: tenantry::resolve::ResolveError) -> Self {
        use tenantry::resolve::ResolveError as R;
        match e {
            R::Required => Error::TenantRequired,
            R::NotFound | R::OutsideOrganization(_) => Error::TenantNotFound,
            R::Mismatch | R::CrossTenant(_) => Error::TenantMismatch,
            R::Suspended => Error::TenantSuspended,
            R::TokenTenantGone => Error::Unauthorized,
            R::Store(s) => s.into(),
        }
    }
}
