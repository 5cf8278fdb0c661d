//! Tenant users: who may manage whom, quotas, password policy.

use crate::auth::password;
use crate::control::{Identity, audit_entry};
use crate::error::{Error, Result, Validator};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use tenantry::audit::NewAuditEntry;
use tenantry::store::{PageRequest, PlatformUser, TenantUser, UserChange};
use tenantry::{Acting, OrgId, Principal, Role, Tenant, TenantId, UserId};

/// A user as the API shows it (tenant users and platform users alike).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct UserView {
    pub id: UserId,
    pub email: Option<String>,
    pub name: String,
    pub role: Role,
    /// The user's tenant; null for platform users.
    pub tenant_id: Option<TenantId>,
    pub organization_id: Option<OrgId>,
    pub phone: Option<String>,
    pub active: bool,
    pub created_at: DateTime<Utc>,
}

impl UserView {
    pub fn tenant_user(tenant: &Tenant, u: &TenantUser) -> Self {
        Self {
            id: u.id,
            email: u.email.clone(),
            name: u.name.clone(),
            role: u.role,
            tenant_id: Some(tenant.id),
            organization_id: tenant.organization_id,
            phone: u.phone.clone(),
            active: u.active,
            created_at: u.created_at,
        }
    }

    pub fn platform_user(u: &PlatformUser) -> Self {
        Self {
            id: u.id,
            email: Some(u.email.clone()),
            name: u.name.clone(),
            role: u.role,
            tenant_id: None,
            organization_id: u.organization_id,
            phone: None,
            active: true,
            created_at: u.created_at,
        }
    }
}

/// Body of `POST /api/v1/users`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub email: String,
    pub password: String,
    pub name: String,
    /// `admin`, `manager` or `user` (default).
    pub role: Option<Role>,
    pub phone: Option<String>,
}

/// Body of `PATCH /api/v1/users/{id}`: any of the fields.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    pub name: Option<String>,
    pub role: Option<Role>,
    pub password: Option<String>,
    pub active: Option<bool>,
    /// `null` removes the phone number.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub phone: Option<Option<String>>,
}

fn present<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// Whether `actor` may manage a user holding `target`: admins (and platform
/// staff acting in the tenant) manage everyone, managers manage `user`s,
/// users manage nobody.
pub fn may_manage(actor: Role, target: Role) -> bool {
    match actor {
        Role::SuperAdmin | Role::OrgAdmin | Role::Admin => true,
        Role::Manager => target == Role::User,
        Role::User => false,
    }
}

pub fn valid_email(email: &str) -> bool {
    email.len() <= 254
        && !email.contains(char::is_whitespace)
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.')
        })
}

/// Phone numbers in E.164: `+` and 8 to 15 digits.
pub fn valid_phone(phone: &str) -> bool {
    phone.strip_prefix('+').is_some_and(|digits| {
        (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
    })
}

/// How audit entries name a tenant user.
fn user_resource(t: &Tenant, id: UserId) -> String {
    format!("tenants/{}/users/{id}", t.id)
}

fn forbidden() -> Error {
    Error::Forbidden("your role may not manage this user".into())
}

/// What a new tenant user starts with, before validation.
pub struct UserSeed {
    pub email: String,
    pub password: Option<String>,
    pub name: String,
    pub role: Role,
    pub phone: Option<String>,
}

impl Identity {
    /// Creates a tenant user, enforcing the plan's user quota and password policy.
    pub async fn create_user(&self, acting: &Acting, input: NewUser) -> Result<UserView> {
        let role = input.role.unwrap_or(Role::User);
        if !may_manage(acting.principal.role, role) {
            return Err(forbidden());
        }
        let seed = UserSeed {
            email: input.email,
            password: Some(input.password),
            name: input.name,
            role,
            phone: input.phone,
        };
        self.insert_tenant_user(Some(&acting.principal), &acting.tenant, seed)
            .await
    }

    /// The one path that adds users to a tenant (management, registration,
    /// OTP sign-up). `actor`: who adds the user; `None` when users sign up
    /// themselves (the new user is then the actor of its audit entry).
    pub async fn insert_tenant_user(
        &self,
        actor: Option<&Principal>,
        tenant: &Tenant,
        seed: UserSeed,
    ) -> Result<UserView> {
        let UserSeed {
            email,
            password,
            name,
            role,
            phone,
        } = seed;
        let mut v = Validator::default();
        let email = email.trim().to_owned();
        v.check(
            (email.is_empty() && phone.is_some()) || valid_email(&email),
            "email",
            "must be an email address",
        );
        v.check(
            !role.is_platform(),
            "role",
            "must be admin, manager or user",
        );
        v.check(
            name.chars().count() <= 200,
            "name",
            "must be at most 200 characters",
        );
        if let Some(p) = &phone {
            v.check(
                valid_phone(p),
                "phone",
                "must be in E.164 form, e.g. +919876543210",
            );
        }
        v.finish()?;
        if let Some(pw) = &password {
            self.check_tenant_password(tenant, pw).await?;
        }
        let max_users = self.core.plan(&tenant.plan).await?.limits.max_users;
        let now = self.core.clock.now();
        let user = TenantUser {
            id: UserId::new(),
            email: (!email.is_empty()).then_some(email),
            name: name.trim().to_owned(),
            role,
            phone,
            password_hash: match password {
                Some(pw) => Some(password::hash(pw).await?),
                None => None,
            },
            active: true,
            created_at: now,
            updated_at: now,
        };
        let resource = user_resource(tenant, user.id);
        let audit = match actor {
            Some(actor) => audit_entry(actor, "user.create", resource),
            None => NewAuditEntry::new(
                user.id.to_string(),
                format!("tenant:{}", tenant.id),
                "user.register",
                resource,
            ),
        };
        self.core
            .store
            .insert_user(tenant, &user, max_users, &audit)
            .await
            .map_err(|e| match e {
                tenantry::store::StoreError::QuotaExceeded => Error::QuotaExceeded(format!(
                    "the plan allows {} users",
                    max_users.unwrap_or(0)
                )),
                other => other.into(),
            })?;
        Ok(UserView::tenant_user(tenant, &user))
    }

    pub async fn list_users(&self, acting: &Acting, page: &PageRequest) -> Result<Vec<UserView>> {
        if acting.principal.role == Role::User {
            return Err(Error::Forbidden("users may not list users".into()));
        }
        let users = self.core.store.list_users(&acting.tenant, page).await?;
        Ok(users
            .iter()
            .map(|u| UserView::tenant_user(&acting.tenant, u))
            .collect())
    }

    async fn target_user(&self, acting: &Acting, id: UserId) -> Result<TenantUser> {
        let not_found = || Error::NotFound("user".into());
        self.core
            .store
            .user(&acting.tenant, id)
            .await?
            .ok_or_else(not_found)
    }

    fn is_self(acting: &Acting, user: &TenantUser) -> bool {
        acting.principal.tenant_id == Some(acting.tenant.id) && acting.principal.user_id == user.id
    }

    pub async fn get_user(&self, acting: &Acting, id: UserId) -> Result<UserView> {
        let user = self.target_user(acting, id).await?;
        if acting.principal.role == Role::User && !Self::is_self(acting, &user) {
            return Err(forbidden());
        }
        Ok(UserView::tenant_user(&acting.tenant, &user))
    }

    /// Changes a user. Anyone may change their own name and password; role
    /// and `active` need the right to manage the user (and its new role).
    /// Only the fields given are written, so concurrent PATCHes of other
    /// fields are kept; the right is judged on the user's role and the
    /// write applies only while the user still has it (judged again if
    /// not). A new password revokes the user's refresh tokens.
    pub async fn update_user(
        &self,
        acting: &Acting,
        id: UserId,
        patch: UserPatch,
    ) -> Result<UserView> {
        let mut v = Validator::default();
        if let Some(name) = &patch.name {
            v.check(
                !name.trim().is_empty() && name.chars().count() <= 200,
                "name",
                "must be 1 to 200 characters",
            );
        }
        if let Some(role) = patch.role {
            v.check(
                !role.is_platform(),
                "role",
                "must be admin, manager or user",
            );
        }
        if let Some(Some(phone)) = &patch.phone {
            v.check(
                valid_phone(phone),
                "phone",
                "must be in E.164 form, e.g. +919876543210",
            );
        }
        v.finish()?;
        let password_hash = match patch.password {
            Some(pw) => {
                self.check_tenant_password(&acting.tenant, &pw).await?;
                Some(password::hash(pw).await?)
            }
            None => None,
        };
        let mut change = UserChange {
            name: patch.name.map(|n| n.trim().to_owned()),
            role: patch.role,
            phone: patch.phone,
            password_hash,
            active: patch.active,
            updated_at: self.core.clock.now(),
            judged_role: None,
        };
        // A role change racing this one: judge the right again, a few times.
        for _ in 0..3 {
            let user = self.target_user(acting, id).await?;
            let self_service =
                Self::is_self(acting, &user) && change.role.is_none() && change.active.is_none();
            if !self_service {
                let new_role = change.role.unwrap_or(user.role);
                if !may_manage(acting.principal.role, user.role)
                    || !may_manage(acting.principal.role, new_role)
                {
                    return Err(forbidden());
                }
            }
            change.judged_role = (!self_service).then_some(user.role);
            let audit = audit_entry(
                &acting.principal,
                "user.update",
                user_resource(&acting.tenant, user.id),
            );
            let changed = self
                .core
                .store
                .change_user(&acting.tenant, user.id, &change, &audit)
                .await?;
            self.core
                .caches
                .users
                .invalidate(&(Some(acting.tenant.id), user.id));
            if let Some(user) = changed {
                return Ok(UserView::tenant_user(&acting.tenant, &user));
            }
        }
        Err(Error::Conflict("user".into()))
    }

    pub async fn delete_user(&self, acting: &Acting, id: UserId) -> Result<()> {
        let user = self.target_user(acting, id).await?;
        if !may_manage(acting.principal.role, user.role) {
            return Err(forbidden());
        }
        let audit = audit_entry(
            &acting.principal,
            "user.delete",
            user_resource(&acting.tenant, user.id),
        );
        self.core
            .store
            .delete_user(&acting.tenant, user.id, &audit)
            .await?;
        self.core
            .caches
            .users
            .invalidate(&(Some(acting.tenant.id), user.id));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn management_rights_by_role() {
        use Role::*;
        for target in [Admin, Manager, User] {
            assert!(may_manage(Admin, target));
            assert!(may_manage(SuperAdmin, target));
            assert!(!may_manage(User, target));
        }
        assert!(may_manage(Manager, User));
        assert!(!may_manage(Manager, Manager));
        assert!(!may_manage(Manager, Admin));
    }

    #[test]
    fn emails_and_phones() {
        assert!(valid_email("a@b.co"));
        assert!(!valid_email("a@b"));
        assert!(!valid_email("a b@c.de"));
        assert!(valid_phone("+919876543210"));
        assert!(!valid_phone("9876543210"));
        assert!(!valid_phone("+12ab"));
    }
}
