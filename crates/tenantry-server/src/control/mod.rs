//! The service layer: every operation of the control plane, called alike by
//! the HTTP API and the CLI. Services check who may do what; handlers only
//! translate HTTP to these calls.

pub mod admins;
pub mod config;
pub mod orgs;
pub mod plans;
pub mod tenants;

use crate::auth::TokenKeys;
use crate::error::{Error, Result};
use crate::keys::Keyring;
use std::sync::Arc;
use tenantry::store::ControlStore;
use tenantry::{Principal, Role, Tenant, UserId};

pub struct Services {
    pub store: Arc<dyn ControlStore>,
    pub keyring: Keyring,
    pub tokens: TokenKeys,
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

impl Services {
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
        Ok(match id_or_slug.parse() {
            Ok(id) => self.store.tenant_by_id(id).await?,
            Err(_) => self.store.tenant_by_slug(id_or_slug).await?,
        })
    }
}
