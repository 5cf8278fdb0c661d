//! The core every plane shares: tenants and organizations as an actor may
//! see them, plans, configuration and features, audit appends, and each
//! tenant's data handle and collection definitions.

use super::{Core, actor_is_platform, audit_entry};
use crate::error::{Error, Result};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use tenantry::Acting;
use tenantry::plan::merge_json;
use tenantry::record::{CollectionDef, valid_collection_name};
use tenantry::store::{ConfigEntry, Organization, PageRequest, TenantData, TenantFilter};
use tenantry::{OrgId, Plan, Principal, Role, Tenant};

/// What clients see in place of an encrypted value.
pub const MASK: &str = "***";

/// How long a request waits for a sealed copy of its tenant's data (a
/// move's freeze lasts well under a second) before answering 503.
const SEALED_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// Between two looks at a sealed copy.
const SEALED_POLL: std::time::Duration = std::time::Duration::from_millis(10);

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

    pub async fn tenant_data(&self, tenant: &Tenant) -> Result<Arc<dyn TenantData>> {
        Ok(self.data.handle(tenant).await?)
    }

    /// Runs `op` on the tenant's data where it lives now. The request's
    /// tenant may predate a move: a copy that is gone (moved away, purged)
    /// or sealed (a move's freeze, an import, a deletion) sends the tenant
    /// back to the control store, bypassing every cache. Moved: `op` runs
    /// again on the new copy. Deleted: 404. Still sealed in place: `op`
    /// waits and retries, so a writer caught in a move's freeze is delayed,
    /// never refused. A shared-tier tenant created before copies carried
    /// their mark (the usage row) gets it once. A miss (404) is checked
    /// once against the tenant's placement: the copy may have been dropped.
    pub async fn on_tenant_data<T, F, Fut>(&self, tenant: &Tenant, op: F) -> Result<T>
    where
        F: Fn(Arc<dyn TenantData>) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let deadline = tokio::time::Instant::now() + SEALED_WAIT;
        let mut tenant = std::borrow::Cow::Borrowed(tenant);
        let mut provisioned = false;
        let mut moved = false;
        loop {
            let outcome = match self.data.handle(&tenant).await {
                Ok(data) => op(data).await,
                Err(e) => Err(e.into()),
            };
            let sealed = match outcome {
                Err(Error::Sealed) => true,
                Err(Error::Absent) => false,
                // A copy a move has just emptied answers "no such record"
                // to a request that resolved the tenant before the switch.
                Err(Error::NotFound(what)) if !moved => {
                    match self.store.tenant_by_id(tenant.id).await? {
                        Some(fresh)
                            if (fresh.isolation, &fresh.placement)
                                != (tenant.isolation, &tenant.placement) =>
                        {
                            self.resolver.invalidate();
                            tenant = std::borrow::Cow::Owned(fresh);
                            moved = true;
                            continue;
                        }
                        _ => return Err(Error::NotFound(what)),
                    }
                }
                other => return other,
            };
            let fresh = self
                .store
                .tenant_by_id(tenant.id)
                .await?
                .ok_or(Error::TenantNotFound)?;
            if (fresh.isolation, &fresh.placement) != (tenant.isolation, &tenant.placement) {
                self.resolver.invalidate();
                tenant = std::borrow::Cow::Owned(fresh);
                moved = true;
                continue;
            }
            if sealed {
                if tokio::time::Instant::now() >= deadline {
                    return Err(Error::Sealed);
                }
                tokio::time::sleep(SEALED_POLL).await;
            } else if fresh.isolation == tenantry::Isolation::Shared && !provisioned {
                self.data.provision(&fresh).await?;
                provisioned = true;
            } else {
                return Err(Error::Internal(format!(
                    "the data of tenant {} is missing from its {} tier",
                    fresh.id,
                    fresh.isolation.as_str()
                )));
            }
        }
    }

    /// A defined collection's definition (cached), checked against the
    /// tenant's features; `None` when it is not defined.
    pub async fn collection(
        &self,
        acting: &Acting,
        data: &dyn TenantData,
        name: &str,
    ) -> Result<Option<CollectionDef>> {
        if !valid_collection_name(name) {
            return Err(Error::NotFound("collection".into()));
        }
        let key = (acting.tenant.id, name.to_owned());
        let cached = self
            .caches
            .collections
            .get_or_try_insert_with(&key, data.collection(name))
            .await?;
        let Some(def) = cached else {
            // Absence is not kept: it may be read from a copy of the
            // tenant's data that a move has just emptied.
            self.caches.collections.invalidate(&key);
            return Ok(None);
        };
        if let Some(feature) = &def.required_feature {
            self.require_feature(&acting.tenant, feature).await?;
        }
        Ok(Some(def))
    }

    /// The value a client sees: encrypted values masked, or decrypted on reveal.
    pub(super) async fn shown_value(
        &self,
        tenant: &Tenant,
        entry: &ConfigEntry,
        reveal: bool,
    ) -> Result<Value> {
        if !entry.encrypted {
            return Ok(entry.value.clone());
        }
        if !reveal {
            return Ok(json!(MASK));
        }
        let sealed = entry.value.as_str().ok_or_else(|| {
            Error::Internal(format!("encrypted config {} is not a string", entry.key))
        })?;
        let wrapped = self.store.tenant_wrapped_key(tenant).await?;
        let plain = self
            .keyring
            .open_value(tenant.id, &wrapped, &entry.key, sealed)
            .map_err(|e| Error::Internal(format!("opening config {}: {e}", entry.key)))?;
        serde_json::from_slice(&plain)
            .map_err(|e| Error::Internal(format!("decrypted config {}: {e}", entry.key)))
    }

    /// The configuration as a map, with no access check (callers check).
    pub(super) async fn config_map(
        &self,
        tenant: &Tenant,
        effective: bool,
        reveal: bool,
    ) -> Result<BTreeMap<String, Value>> {
        let mut out = if effective {
            self.plan(&tenant.plan).await?.config_defaults.clone()
        } else {
            BTreeMap::new()
        };
        for entry in self.store.list_config(tenant).await? {
            let value = self.shown_value(tenant, &entry, reveal).await?;
            match out.get_mut(&entry.key) {
                Some(base) if !entry.encrypted => merge_json(base, &value),
                _ => {
                    out.insert(entry.key, value);
                }
            }
        }
        Ok(out)
    }

    /// Effective configuration for the server's own use (always decrypted).
    pub async fn effective_config(&self, tenant: &Tenant) -> Result<BTreeMap<String, Value>> {
        self.config_map(tenant, true, true).await
    }

    /// The tenant's effective features: the plan's flags, then the tenant's
    /// `features` config override (an object of name → bool), if any.
    pub async fn tenant_features(&self, tenant: &Tenant) -> Result<BTreeMap<String, bool>> {
        let mut features = self.plan(&tenant.plan).await?.features.clone();
        let entry = self.store.config(tenant, "features").await?;
        if let Some(overrides) = entry
            .as_ref()
            .filter(|e| !e.encrypted)
            .and_then(|e| e.value.as_object())
        {
            for (name, on) in overrides {
                if let Some(on) = on.as_bool() {
                    features.insert(name.clone(), on);
                }
            }
        }
        Ok(features)
    }

    pub async fn require_feature(&self, tenant: &Tenant, feature: &str) -> Result<()> {
        if self
            .tenant_features(tenant)
            .await?
            .get(feature)
            .copied()
            .unwrap_or(false)
        {
            Ok(())
        } else {
            Err(Error::FeatureNotEnabled(feature.to_owned()))
        }
    }

    /// An organization `actor` may see; any other is unknown.
    pub async fn org(&self, actor: &Principal, id: &str) -> Result<Organization> {
        let not_found = || Error::NotFound("organization".into());
        let id: OrgId = id.parse().map_err(|_| not_found())?;
        let allowed = match actor.role {
            Role::SuperAdmin => true,
            Role::OrgAdmin => actor.org_id == Some(id),
            _ => return Err(Error::Forbidden("platform staff only".into())),
        };
        if !allowed {
            return Err(not_found());
        }
        self.store.org(id).await?.ok_or_else(not_found)
    }

    pub async fn list_plans(&self) -> Result<Vec<Plan>> {
        Ok(self.store.list_plans().await?)
    }

    /// A plan by code, from the cache (every tenant-scoped request asks for
    /// its tenant's plan; `put_plan` invalidates it here, the TTL elsewhere).
    pub async fn plan(&self, code: &str) -> Result<Arc<Plan>> {
        self.caches
            .plans
            .get_or_try_insert_with(code, async {
                Ok::<_, Error>(self.store.plan(code).await?.map(Arc::new))
            })
            .await?
            .ok_or_else(|| Error::NotFound("plan".into()))
    }

    pub async fn list_tenants(
        &self,
        actor: &Principal,
        mut filter: TenantFilter,
        page: &PageRequest,
    ) -> Result<Vec<Tenant>> {
        actor_is_platform(actor)?;
        if actor.role == Role::OrgAdmin {
            if filter
                .organization_id
                .is_some_and(|o| Some(o) != actor.org_id)
            {
                return Ok(Vec::new());
            }
            filter.organization_id = actor.org_id;
        }
        Ok(self.store.list_tenants(&filter, page).await?)
    }
}
