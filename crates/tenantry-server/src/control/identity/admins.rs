//! Platform users: the first super-admin, further admins, and their login.

use crate::auth::password;
use crate::control::{Identity, audit_entry};
use crate::error::{Result, Validator};

use rand::distributions::{Alphanumeric, DistString};
use tenantry::store::PlatformUser;
use tenantry::{OrgId, Role, UserId};

fn check_credentials(v: &mut Validator, email: &str, password: &str) {
    v.check(
        email.len() <= 254
            && email
                .split_once('@')
                .is_some_and(|(a, b)| !a.is_empty() && b.contains('.')),
        "email",
        "must be an email address",
    );
    v.check(
        password.chars().count() >= 8,
        "password",
        "must be at least 8 characters",
    );
}

impl Identity {
    /// Creates a platform user. `role` is `SuperAdmin` or `OrgAdmin` (with its organization).
    pub async fn create_platform_user(
        &self,
        actor: &tenantry::Principal,
        email: &str,
        password: String,
        name: &str,
        role: Role,
        organization_id: Option<OrgId>,
    ) -> Result<PlatformUser> {
        let mut v = Validator::default();
        check_credentials(&mut v, email, &password);
        v.check(
            role.is_platform(),
            "role",
            "must be super_admin or org_admin",
        );
        v.check(
            (role == Role::OrgAdmin) == organization_id.is_some(),
            "organization_id",
            "org admins, and only they, belong to an organization",
        );
        v.finish()?;
        let user = PlatformUser {
            id: UserId::new(),
            email: email.trim().to_owned(),
            name: name.trim().to_owned(),
            password_hash: password::hash(password).await?,
            role,
            organization_id,
            created_at: self.core.clock.now(),
        };
        let what = match organization_id {
            Some(org) => format!("platform_users/{}?organization={org}", user.id),
            None => format!("platform_users/{}", user.id),
        };
        let audit = audit_entry(actor, "platform_user.create", what);
        self.core.store.insert_platform_user(&user, &audit).await?;
        Ok(user)
    }

    /// At first start, creates the super-admin from the configured email and
    /// password, or with a generated password that is returned to be shown once.
    pub async fn bootstrap_super_admin(
        &self,
        email: Option<&str>,
        password: Option<&str>,
    ) -> Result<Option<(String, String)>> {
        if self.core.store.count_super_admins().await? > 0 {
            return Ok(None);
        }
        let email = email.unwrap_or("admin@tenantry.local").to_owned();
        let (password, generated) = match password {
            Some(p) => (p.to_owned(), false),
            None => (
                Alphanumeric.sample_string(&mut rand::thread_rng(), 24),
                true,
            ),
        };
        self.create_platform_user(
            &crate::control::console_operator(),
            &email,
            password.clone(),
            "Platform admin",
            Role::SuperAdmin,
            None,
        )
        .await?;
        Ok(generated.then_some((email, password)))
    }
}

/// Body of `POST /api/v1/organizations/{id}/admins`.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOrgAdmin {
    pub email: String,
    pub password: String,
    pub name: String,
}

impl Identity {
    /// Adds an administrator to an organization (super-admin).
    pub async fn create_org_admin(
        &self,
        actor: &tenantry::Principal,
        org: &str,
        input: NewOrgAdmin,
    ) -> Result<super::users::UserView> {
        if actor.role != Role::SuperAdmin {
            return Err(crate::error::Error::Forbidden("super-admin only".into()));
        }
        let org = self.core.org(actor, org).await?;
        let user = self
            .create_platform_user(
                actor,
                &input.email,
                input.password,
                &input.name,
                Role::OrgAdmin,
                Some(org.id),
            )
            .await?;
        Ok(super::users::UserView::platform_user(&user))
    }
}
