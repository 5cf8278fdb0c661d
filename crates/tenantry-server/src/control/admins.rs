//! Platform users: the first super-admin, further admins, and their login.

use super::Services;
use crate::auth::password;
use crate::error::{Error, Result, Validator};
use chrono::Utc;
use rand::distributions::{Alphanumeric, DistString};
use serde::{Deserialize, Serialize};
use tenantry::store::PlatformUser;
use tenantry::{OrgId, Principal, Role, UserId};

/// Lifetime of platform users' access tokens.
pub const PLATFORM_TOKEN_SECS: u64 = 3600;

/// Body of `POST /api/v1/auth/login`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
    /// Slug or id of the tenant whose user logs in; absent for platform users.
    pub tenant: Option<String>,
}

/// The user a token was issued to.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserView {
    pub id: UserId,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub organization_id: Option<OrgId>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LoginResponse {
    pub access_token: String,
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    pub user: UserView,
    /// The tenant of a tenant user; null for platform users.
    #[schema(value_type = Option<Object>)]
    pub tenant: Option<tenantry::Tenant>,
}

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

impl Services {
    /// Creates a platform user. `role` is `SuperAdmin` or `OrgAdmin` (with its organization).
    pub async fn create_platform_user(
        &self,
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
            created_at: Utc::now(),
        };
        self.store.insert_platform_user(&user).await?;
        Ok(user)
    }

    /// At first start, creates the super-admin from the configured email and
    /// password, or with a generated password that is returned to be shown once.
    pub async fn bootstrap_super_admin(
        &self,
        email: Option<&str>,
        password: Option<&str>,
    ) -> Result<Option<(String, String)>> {
        if self.store.count_super_admins().await? > 0 {
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
            &email,
            password.clone(),
            "Platform admin",
            Role::SuperAdmin,
            None,
        )
        .await?;
        Ok(generated.then_some((email, password)))
    }

    pub async fn login(&self, req: LoginRequest) -> Result<LoginResponse> {
        if req.tenant.is_some() {
            // Tenant users arrive with the identity work; until then no
            // tenant account can exist, and the answer is the same 401.
            password::verify(req.password, None).await?;
            return Err(Error::Unauthorized);
        }
        let user = self.store.platform_user_by_email(req.email.trim()).await?;
        let ok =
            password::verify(req.password, user.as_ref().map(|u| u.password_hash.clone())).await?;
        let user = user.filter(|_| ok).ok_or(Error::Unauthorized)?;
        let principal = Principal {
            user_id: user.id,
            role: user.role,
            tenant_id: None,
            org_id: user.organization_id,
        };
        Ok(LoginResponse {
            access_token: self.tokens.issue(&principal, PLATFORM_TOKEN_SECS)?,
            token_type: "Bearer",
            expires_in: PLATFORM_TOKEN_SECS,
            user: UserView {
                id: user.id,
                email: user.email,
                name: user.name,
                role: user.role,
                organization_id: user.organization_id,
            },
            tenant: None,
        })
    }
}
