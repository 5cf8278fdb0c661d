//! The service layer: every operation of the control plane, called alike by
//! the HTTP API and the CLI. Services check who may do what; handlers only
//! translate HTTP to these calls.

pub mod admins;
pub mod admission;
pub mod analytics;
pub mod audit;
pub mod config;
pub mod data;
pub mod jobs;
pub mod orgs;
pub mod plans;
pub mod policy;
pub mod query;
pub mod queue;
pub mod sessions;
pub mod tenants;
pub mod users;

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
use tenantry::{Principal, Role, Tenant, UserId};

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
    pub schemas: data::CompiledSchemas,
}

pub struct Analytics {
    pub core: Arc<Core>,
    pub daily_quota: Arc<DailyQuota>,
}

pub struct Tenants {
    pub core: Arc<Core>,
    /// The job queue as this node sees it.
    pub jobs: queue::JobQueue,
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

impl Core {
    /// Forgets every cached lookup of tenants and what they hold: a tenant
    /// was deleted or moved.
    pub fn forget_tenant(&self) {
        self.resolver.invalidate();
        self.caches.users.invalidate_all();
        self.caches.collections.invalidate_all();
    }

    /// Finds a live tenant by id or slug as `actor` may see it: a tenant
    /// outside an org admin's organization is reported as unknown, exactly
    /// like one that never existed.
    pub async fn visible_tenant(&self, actor: &Principal, id_or_slug: &str) -> Result<Tenant> {
        let tenant = self
            .find_tenant(id_or_slug)
            .await?
            .ok_or(Error::TenantNotFound)?;
        let visible =
            actor.may_administer(tenant.organization_id) || actor.tenant_id == Some(tenant.id);
        if visible {
            Ok(tenant)
        } else {
            Err(Error::TenantNotFound)
        }
    }

    /// Like `visible_tenant`, but tenant users may not administer even their own tenant.
    pub async fn administered_tenant(&self, actor: &Principal, id_or_slug: &str) -> Result<Tenant> {
        let tenant = self.visible_tenant(actor, id_or_slug).await?;
        if actor.may_administer(tenant.organization_id) {
            Ok(tenant)
        } else {
            Err(Error::Forbidden("platform staff only".into()))
        }
    }

    /// Finds a live tenant by id or slug, with no access check (public routes).
    pub async fn find_tenant(&self, id_or_slug: &str) -> Result<Option<Tenant>> {
        Ok(self.resolver.find(id_or_slug).await?)
    }

    /// Records an event that changes nothing else (an access, a login) in
    /// the tenant's control chain; `None`: the platform chain. Changes are
    /// recorded by the store, in the transaction that makes them.
    pub async fn audit(
        &self,
        tenant: Option<&Tenant>,
        actor: &Principal,
        action: &str,
        resource: &str,
    ) -> Result<()> {
        let entry = audit_entry(actor, action, resource);
        self.store.append_audit(tenant, &entry).await?;
        Ok(())
    }

    /// A refused attempt to act in another tenant. It is recorded in the
    /// caller's own chain (a tenant user's: its tenant's; an org admin's:
    /// the platform's), naming the target as the resource: the target's
    /// admins must not learn who probes them, nor may the answer to an org
    /// admin differ from the one for a tenant that does not exist. Repeats
    /// by one user against one tenant are recorded once a minute: the
    /// attempt happens before any rate limit, and must not let a client
    /// write to the log as fast as it can send.
    pub async fn audit_cross_tenant(
        &self,
        actor: &Principal,
        target: &Tenant,
        method: &str,
        path: &str,
    ) -> Result<()> {
        let key = (actor.user_id, target.id);
        if self.caches.cross_tenant_recorded.get(&key).is_some() {
            return Ok(());
        }
        self.caches.cross_tenant_recorded.insert(key, ());
        let own = match actor.tenant_id {
            Some(tid) => self.resolver.find(&tid.to_string()).await?,
            None => None,
        };
        let action = format!("cross_tenant_denied.{}", method.to_ascii_lowercase());
        let resource = format!("tenants/{}{path}", target.id);
        self.audit(own.as_ref(), actor, &action, &resource).await
    }

    /// Platform staff reading inside a tenant leave a trace in its chain:
    /// `staff_<what>.read` on `tenant:<id>/<what>`.
    pub async fn audit_staff_read(
        &self,
        actor: &Principal,
        tenant: &Tenant,
        what: &str,
    ) -> Result<()> {
        if actor.role.is_platform() {
            let resource = format!("tenant:{}/{what}", tenant.id);
            self.audit(
                Some(tenant),
                actor,
                &format!("staff_{what}.read"),
                &resource,
            )
            .await?;
        }
        Ok(())
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
