//! The tenants plane: each tenant's lifecycle (here: create, change,
//! suspend, activate, delete), plans, configuration and branding,
//! organizations, the jobs that export, import, move and purge tenants
//! (and their queue), and the audit logs with their verification.

pub mod audit;
pub mod config;
pub mod jobs;
pub mod orgs;
pub mod plans;
pub mod queue;

use super::{Tenants, actor_is_platform, audit_entry};
use crate::error::{Error, Result, Validator};

use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use tenantry::job::{Job, JobKind};
use tenantry::store::TenantChange;
use tenantry::{Isolation, JobId, OrgId, Principal, Role, Slug, Tenant, TenantId, TenantStatus};

/// Body of `POST /api/v1/tenants`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    pub name: String,
    pub slug: String,
    /// Plan code; `basic` when omitted.
    pub plan: Option<String>,
    /// Defaults to the plan's `default_isolation`.
    pub isolation: Option<Isolation>,
    pub organization_id: Option<OrgId>,
    pub domain: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: Option<Value>,
    #[schema(value_type = Object)]
    pub branding: Option<Value>,
}

/// Body of `PATCH /api/v1/tenants/{id}`: any subset of the fields.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantPatch {
    pub name: Option<String>,
    pub slug: Option<String>,
    /// `null` removes the custom domain.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub domain: Option<Option<String>>,
    #[schema(value_type = Object)]
    pub metadata: Option<Value>,
    #[schema(value_type = Object)]
    pub branding: Option<Value>,
    pub plan: Option<String>,
}

/// Tells an explicit `null` (Some(None)) from an absent field (None).
fn present<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

fn check_name(v: &mut Validator, name: &str) {
    v.check(
        !name.trim().is_empty() && name.chars().count() <= 200,
        "name",
        "must be 1 to 200 characters",
    );
}

fn check_slug(v: &mut Validator, slug: &str) -> Option<Slug> {
    Slug::parse(slug)
        .map_err(|e| v.push("slug", e.to_string()))
        .ok()
}

/// A custom domain: a lowercase DNS name with at least two labels.
fn normalize_domain(v: &mut Validator, domain: &str) -> Option<String> {
    let d = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    // An address is not a domain (and could be the platform's own host).
    let numeric_top = d
        .rsplit('.')
        .next()
        .is_some_and(|top| top.bytes().all(|b| b.is_ascii_digit()));
    if d.len() <= 253 && d.contains('.') && d.split('.').all(label_ok) && !numeric_top {
        Some(d)
    } else {
        v.push("domain", "must be a DNS name such as crm.example.com");
        None
    }
}

fn check_object(v: &mut Validator, field: &str, value: &Option<Value>) {
    if let Some(value) = value {
        v.check(value.is_object(), field, "must be a JSON object");
    }
}

impl Tenants {
    pub async fn create_tenant(&self, actor: &Principal, input: NewTenant) -> Result<Tenant> {
        actor_is_platform(actor)?;
        let mut v = Validator::default();
        check_name(&mut v, &input.name);
        let slug = check_slug(&mut v, &input.slug);
        let domain = input
            .domain
            .as_deref()
            .and_then(|d| normalize_domain(&mut v, d));
        self.check_domain_is_custom(&mut v, domain.as_deref());
        check_object(&mut v, "metadata", &input.metadata);
        check_object(&mut v, "branding", &input.branding);
        let plan_code = input.plan.unwrap_or_else(|| "basic".to_owned());
        let plan = self.core.store.plan(&plan_code).await?;
        if plan.is_none() {
            v.push("plan", format!("unknown plan `{plan_code}`"));
        }
        // An org admin creates tenants in its own organization only.
        let organization_id = match actor.role {
            Role::OrgAdmin => {
                if input
                    .organization_id
                    .is_some_and(|o| Some(o) != actor.org_id)
                {
                    return Err(Error::Forbidden(
                        "org admins create tenants in their own organization".into(),
                    ));
                }
                actor.org_id
            }
            _ => input.organization_id,
        };
        if let Some(org) = organization_id
            && self.core.store.org(org).await?.is_none()
        {
            v.push("organization_id", "no such organization");
        }
        v.finish()?;
        let (Some(slug), Some(plan)) = (slug, plan) else {
            return Err(Error::Internal(
                "validated tenant input lost its slug or plan".into(),
            ));
        };
        let branding = input
            .branding
            .unwrap_or_else(|| Value::Object(Default::default()));
        if branding.as_object().is_some_and(|b| !b.is_empty())
            && !plan.has_feature("custom_branding")
        {
            return Err(Error::FeatureNotEnabled("custom_branding".into()));
        }
        let now = self.core.clock.now();
        let tenant = Tenant {
            id: TenantId::new(),
            slug,
            name: input.name.trim().to_owned(),
            plan: plan.code.clone(),
            status: TenantStatus::Active,
            isolation: input.isolation.unwrap_or(plan.default_isolation),
            organization_id,
            domain,
            metadata: input
                .metadata
                .unwrap_or_else(|| Value::Object(Default::default())),
            branding,
            created_at: now,
            updated_at: now,
            placement: self.placement().await?,
        };
        // The tenant's storage exists before the tenant does: once the 201
        // is sent, its data plane answers.
        self.core.data.provision(&tenant).await?;
        let wrapped = self.core.keyring.new_wrapped_data_key(tenant.id);
        let audit = audit_entry(actor, "tenant.create", tenant_resource(&tenant));
        if let Err(e) = self
            .core
            .store
            .insert_tenant(&tenant, &wrapped, &audit)
            .await
        {
            self.core.data.purge(&tenant).await?;
            return Err(e.into());
        }
        self.core.resolver.invalidate();
        tracing::info!(tenant_id = %tenant.id, slug = %tenant.slug, plan = %tenant.plan, "tenant created");
        Ok(tenant)
    }

    /// The least-loaded database server for a new tenant, where several are configured.
    async fn placement(&self) -> Result<Option<String>> {
        let servers = self.core.data.placement_servers();
        if servers.is_empty() {
            return Ok(None);
        }
        let counts = self.core.store.placement_counts().await?;
        Ok(tenantry::placement::least_loaded(servers, &counts).map(|s| s.name.clone()))
    }

    /// A custom domain may not be the platform's base domain or under it:
    /// that would let one tenant capture every request to those hosts.
    fn check_domain_is_custom(&self, v: &mut Validator, domain: Option<&str>) {
        let (Some(domain), Some(base)) =
            (domain, self.core.resolver.config().base_domain.as_deref())
        else {
            return;
        };
        let base = base.trim_end_matches('.').to_ascii_lowercase();
        if domain == base || domain.ends_with(&format!(".{base}")) {
            v.push(
                "domain",
                "must not be the platform's base domain or one of its subdomains",
            );
        }
    }

    /// Single-tenant mode: the `default` tenant every request belongs to.
    pub async fn ensure_default_tenant(&self) -> Result<Tenant> {
        if let Some(t) = self.core.resolver.default_tenant().await? {
            return Ok(t);
        }
        let slug = Slug::parse_allowing_reserved(tenantry::resolve::DEFAULT_TENANT_SLUG)
            .map_err(|e| Error::Internal(format!("default slug: {e}")))?;
        let plan = self.core.plan("basic").await?;
        let now = self.core.clock.now();
        let tenant = Tenant {
            id: TenantId::new(),
            slug,
            name: "Default".to_owned(),
            plan: plan.code.clone(),
            status: TenantStatus::Active,
            isolation: plan.default_isolation,
            organization_id: None,
            domain: None,
            metadata: Value::Object(Default::default()),
            branding: Value::Object(Default::default()),
            created_at: now,
            updated_at: now,
            placement: self.placement().await?,
        };
        self.core.data.provision(&tenant).await?;
        let audit = audit_entry(
            &super::console_operator(),
            "tenant.create",
            tenant_resource(&tenant),
        );
        self.core
            .store
            .insert_tenant(
                &tenant,
                &self.core.keyring.new_wrapped_data_key(tenant.id),
                &audit,
            )
            .await?;
        self.core.resolver.invalidate();
        Ok(tenant)
    }

    pub async fn update_tenant(
        &self,
        actor: &Principal,
        id_or_slug: &str,
        patch: TenantPatch,
    ) -> Result<Tenant> {
        let tenant = self.core.administered_tenant(actor, id_or_slug).await?;
        let mut v = Validator::default();
        if let Some(name) = &patch.name {
            check_name(&mut v, name);
        }
        let slug = patch.slug.as_deref().map(|s| check_slug(&mut v, s));
        let domain = patch
            .domain
            .as_ref()
            .map(|d| d.as_deref().and_then(|d| normalize_domain(&mut v, d)));
        self.check_domain_is_custom(&mut v, domain.as_ref().and_then(|d| d.as_deref()));
        check_object(&mut v, "metadata", &patch.metadata);
        check_object(&mut v, "branding", &patch.branding);
        if let Some(plan) = &patch.plan
            && self.core.store.plan(plan).await?.is_none()
        {
            v.push("plan", format!("unknown plan `{plan}`"));
        }
        v.finish()?;
        if patch.branding.is_some() {
            self.core
                .require_feature(&tenant, "custom_branding")
                .await?;
        }
        let change = TenantChange {
            slug: slug.flatten(),
            name: patch.name.map(|n| n.trim().to_owned()),
            plan: patch.plan,
            domain,
            metadata: patch.metadata,
            branding: patch.branding,
            updated_at: self.core.clock.now(),
        };
        self.change_tenant(actor, "tenant.update", &tenant, &change)
            .await
    }

    /// Changes the tenant's plan; where the new plan's `default_isolation`
    /// differs from the tenant's tier, also queues the move there (the job).
    pub async fn set_tenant_plan(
        &self,
        actor: &Principal,
        id_or_slug: &str,
        plan: String,
    ) -> Result<(Tenant, Option<Job>)> {
        let patch = TenantPatch {
            plan: Some(plan),
            ..TenantPatch::default()
        };
        let tenant = self.update_tenant(actor, id_or_slug, patch).await?;
        let plan = self.core.plan(&tenant.plan).await?;
        if plan.default_isolation == tenant.isolation {
            return Ok((tenant, None));
        }
        let mut target = tenant.clone();
        target.isolation = plan.default_isolation;
        let job = self.enqueue_move(actor, &tenant, &target).await?;
        Ok((tenant, Some(job)))
    }

    pub async fn set_tenant_status(
        &self,
        actor: &Principal,
        id_or_slug: &str,
        status: TenantStatus,
    ) -> Result<Tenant> {
        let mut tenant = self.core.administered_tenant(actor, id_or_slug).await?;
        let action = match status {
            TenantStatus::Suspended => "tenant.suspend",
            _ => "tenant.activate",
        };
        let audit = audit_entry(actor, action, tenant_resource(&tenant));
        let now = self.core.clock.now();
        self.core
            .store
            .set_tenant_status(&tenant, status, now, &audit)
            .await
            .map_err(gone)?;
        self.core.resolver.invalidate();
        tenant.status = status;
        tenant.updated_at = now;
        tracing::info!(tenant_id = %tenant.id, status = status.as_str(), "tenant status changed");
        Ok(tenant)
    }

    /// Starts the tenant's deletion: it is `deleting` at once (unknown to
    /// every tenant-scoped route, its slug and domain free, its data sealed
    /// against writes on every instance), and the sweeper job purges it.
    pub async fn delete_tenant(&self, actor: &Principal, id_or_slug: &str) -> Result<JobId> {
        let tenant = self.core.administered_tenant(actor, id_or_slug).await?;
        let job = self.new_job(actor, &tenant, JobKind::Delete, json!({}), None);
        let audit = audit_entry(actor, "tenant.delete", tenant_resource(&tenant));
        self.core
            .store
            .mark_tenant_deleting(&tenant, &job, &audit)
            .await
            .map_err(jobs::job_conflict)?;
        self.core.forget_tenant();
        // Requests that resolved the tenant before this are refused by the
        // seal from now on (the sweeper seals again if this fails).
        if let Ok(data) = self.core.data.handle(&tenant).await
            && let Err(e) = data.seal().await
        {
            tracing::warn!(tenant_id = %tenant.id, error = %e, "sealing a deleted tenant's data failed; the sweeper will");
        }
        self.jobs.wake.notify_waiters();
        tracing::info!(tenant_id = %tenant.id, job_id = %job.id, "tenant deletion started");
        Ok(job.id)
    }

    /// Writes a changed tenant, recording `action` by `actor` with it.
    /// Writes only the fields `change` sets (a concurrent PATCH of others,
    /// a move switching the tier, a suspension: none is undone).
    pub(super) async fn change_tenant(
        &self,
        actor: &Principal,
        action: &str,
        tenant: &Tenant,
        change: &TenantChange,
    ) -> Result<Tenant> {
        let audit = audit_entry(actor, action, tenant_resource(tenant));
        let tenant = self
            .core
            .store
            .change_tenant(tenant.id, change, &audit)
            .await
            .map_err(gone)?;
        self.core.resolver.invalidate();
        Ok(tenant)
    }
}

/// How audit entries name a tenant.
fn tenant_resource(t: &Tenant) -> String {
    format!("tenants/{}", t.id)
}

/// A tenant deleted while the request was in flight is unknown.
fn gone(e: tenantry::store::StoreError) -> Error {
    match e {
        tenantry::store::StoreError::NotFound => Error::TenantNotFound,
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_normalised_or_refused() {
        let mut v = Validator::default();
        assert_eq!(
            normalize_domain(&mut v, "CRM.Example.com."),
            Some("crm.example.com".into())
        );
        for bad in [
            "localhost",
            "-a.example.com",
            "a..b",
            "exa mple.com",
            "x.com/path",
        ] {
            assert_eq!(normalize_domain(&mut v, bad), None, "{bad}");
        }
    }
}
