//! Organizations: enterprises that group several tenants.

use crate::control::{Tenants, audit_entry};
use crate::error::{Error, Result, Validator};

use serde::Deserialize;
use tenantry::store::{Organization, PageRequest, TenantFilter};
use tenantry::{OrgId, Principal, Role, Tenant};

/// Body of `POST /api/v1/organizations`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOrganization {
    pub name: String,
    pub description: Option<String>,
}

impl Tenants {
    pub async fn create_org(
        &self,
        actor: &Principal,
        input: NewOrganization,
    ) -> Result<Organization> {
        if actor.role != Role::SuperAdmin {
            return Err(Error::Forbidden("super-admin only".into()));
        }
        let mut v = Validator::default();
        v.check(
            !input.name.trim().is_empty() && input.name.chars().count() <= 200,
            "name",
            "must be 1 to 200 characters",
        );
        v.finish()?;
        let org = Organization {
            id: OrgId::new(),
            name: input.name.trim().to_owned(),
            description: input.description,
            created_at: self.core.clock.now(),
        };
        let audit = audit_entry(
            actor,
            "organization.create",
            format!("organizations/{}", org.id),
        );
        self.core.store.insert_org(&org, &audit).await?;
        Ok(org)
    }

    pub async fn list_orgs(
        &self,
        actor: &Principal,
        page: &PageRequest,
    ) -> Result<Vec<Organization>> {
        match actor.role {
            Role::SuperAdmin => Ok(self.core.store.list_orgs(None, page).await?),
            Role::OrgAdmin => match actor.org_id {
                Some(org) => Ok(self.core.store.list_orgs(Some(org), page).await?),
                None => Ok(Vec::new()),
            },
            _ => Err(Error::Forbidden("platform staff only".into())),
        }
    }

    pub async fn org_tenants(
        &self,
        actor: &Principal,
        id: &str,
        page: &PageRequest,
    ) -> Result<Vec<Tenant>> {
        let org = self.core.org(actor, id).await?;
        let filter = TenantFilter {
            organization_id: Some(org.id),
            ..TenantFilter::default()
        };
        Ok(self.core.store.list_tenants(&filter, page).await?)
    }
}
