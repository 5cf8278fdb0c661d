//! Who is acting: the authenticated principal, its role, and the tenant it
//! acts in.

use crate::ids::{OrgId, TenantId, UserId};
use crate::tenant::Tenant;
use serde::{Deserialize, Serialize};

/// Roles, from the platform down to a tenant's plain users.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    SuperAdmin,
    OrgAdmin,
    Admin,
    Manager,
    User,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::SuperAdmin => "super_admin",
            Role::OrgAdmin => "org_admin",
            Role::Admin => "admin",
            Role::Manager => "manager",
            Role::User => "user",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "super_admin" => Role::SuperAdmin,
            "org_admin" => Role::OrgAdmin,
            "admin" => Role::Admin,
            "manager" => Role::Manager,
            "user" => Role::User,
            _ => return None,
        })
    }

    /// Platform staff act on the control plane, outside any one tenant.
    pub fn is_platform(self) -> bool {
        matches!(self, Role::SuperAdmin | Role::OrgAdmin)
    }
}

/// The authenticated caller, as proven by a verified access token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub user_id: UserId,
    pub role: Role,
    /// The tenant the token is bound to; `None` for platform users.
    pub tenant_id: Option<TenantId>,
    /// The organization of an org admin (or of a tenant user's tenant).
    pub org_id: Option<OrgId>,
}

impl Principal {
    /// Whether this principal may administer a tenant of `tenant_org` from the
    /// control plane: super-admins everywhere, org admins in their organization.
    pub fn may_administer(&self, tenant_org: Option<OrgId>) -> bool {
        match self.role {
            Role::SuperAdmin => true,
            Role::OrgAdmin => self.org_id.is_some() && self.org_id == tenant_org,
            _ => false,
        }
    }
}

/// A principal acting inside one resolved tenant: what every tenant-scoped
/// service call takes, so the tenant it works in is the one the request was
/// resolved to and never a free-floating id.
#[derive(Clone, Debug)]
pub struct Acting {
    pub principal: Principal,
    pub tenant: Tenant,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn org_admin_administers_only_its_own_organization() {
        let org = OrgId::new();
        let p = Principal {
            user_id: UserId::new(),
            role: Role::OrgAdmin,
            tenant_id: None,
            org_id: Some(org),
        };
        assert!(p.may_administer(Some(org)));
        assert!(!p.may_administer(Some(OrgId::new())));
        assert!(!p.may_administer(None));
    }

    #[test]
    fn roles_round_trip_through_their_names() {
        for r in [
            Role::SuperAdmin,
            Role::OrgAdmin,
            Role::Admin,
            Role::Manager,
            Role::User,
        ] {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("root"), None);
    }
}
