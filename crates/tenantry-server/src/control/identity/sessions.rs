//! Sessions: password and OTP login, self-registration, refresh-token
//! rotation with reuse detection, logout, `me`.

use super::users::{UserSeed, UserView};
use crate::auth::{otp, password};
use crate::control::Identity;
use crate::error::{Error, Result};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Duration;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tenantry::audit::NewAuditEntry;
use tenantry::store::{OtpRecord, RefreshRecord, StoreError, TenantUser};
use tenantry::{Principal, Role, Tenant, TenantStatus};
use uuid::Uuid;

/// Lifetime of platform users' access tokens.
pub const PLATFORM_TOKEN_SECS: u64 = 3600;
/// Refresh tokens live this long unless rotated or revoked first.
pub const REFRESH_TOKEN_DAYS: i64 = 30;
pub const OTP_TTL_SECS: i64 = 300;
pub const OTP_MAX_ATTEMPTS: u32 = 5;

/// Body of `POST /api/v1/auth/login`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
    /// Slug or id of the tenant whose user logs in; absent for platform users.
    pub tenant: Option<String>,
}

/// Tokens for a signed-in user.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LoginResponse {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    pub user: UserView,
    /// The tenant of a tenant user; null for platform users.
    pub tenant: Option<Tenant>,
}

/// Body of `POST /api/v1/auth/register`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub tenant: String,
    pub email: String,
    pub password: String,
    pub name: String,
}

/// Body of `POST /api/v1/auth/refresh` and `/logout`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// Body of `POST /api/v1/auth/otp/request`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct OtpRequest {
    pub tenant: String,
    pub phone: String,
}

/// Body of `POST /api/v1/auth/otp/verify`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct OtpVerify {
    pub tenant: String,
    pub phone: String,
    pub code: String,
}

/// `GET /api/v1/auth/me`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Me {
    pub user: UserView,
    pub tenant: Option<Tenant>,
}

fn hash_refresh(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Identity {
    /// An active tenant named in a request body; unknown → 404, suspended → 403.
    async fn body_tenant(&self, reference: &str) -> Result<Tenant> {
        let tenant = self
            .core
            .find_tenant(reference)
            .await?
            .ok_or(Error::TenantNotFound)?;
        match tenant.status {
            TenantStatus::Active => Ok(tenant),
            TenantStatus::Suspended => Err(Error::TenantSuspended),
            TenantStatus::Deleting | TenantStatus::Deleted => Err(Error::TenantNotFound),
        }
    }

    /// Issues an access token and a refresh token (of `family`, or a new one).
    async fn issue_session(
        &self,
        principal: Principal,
        tenant: Option<Tenant>,
        user: UserView,
        rotates: Option<&RefreshRecord>,
    ) -> Result<LoginResponse> {
        let lifetime = match &tenant {
            Some(t) => self.session_timeout(t).await?,
            None => PLATFORM_TOKEN_SECS,
        };
        let mut raw = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut raw);
        let refresh_token = URL_SAFE_NO_PAD.encode(raw);
        let record = RefreshRecord {
            token_hash: hash_refresh(&refresh_token),
            family_id: rotates.map_or_else(Uuid::now_v7, |r| r.family_id),
            tenant_id: principal.tenant_id,
            user_id: principal.user_id,
            expires_at: self.core.clock.now() + Duration::days(REFRESH_TOKEN_DAYS),
            used_at: None,
            revoked_at: None,
        };
        let parent = rotates.map(|r| r.token_hash.as_str());
        match self.core.store.insert_refresh(&record, parent).await {
            // A logout or password change revoked the family meanwhile.
            Err(StoreError::NotFound) if rotates.is_some() => return Err(Error::Unauthorized),
            other => other?,
        }
        Ok(LoginResponse {
            access_token: self.tokens.issue(&principal, lifetime)?,
            refresh_token,
            token_type: "Bearer",
            expires_in: lifetime,
            user,
            tenant,
        })
    }

    /// Records a login attempt in the tenant's chain (`None`: the platform
    /// chain). `user`: the account's id when it exists; a failure against an
    /// unknown account is recorded under the name that was tried.
    async fn audit_login(
        &self,
        tenant: Option<&Tenant>,
        user: Option<String>,
        tried: &str,
        ok: bool,
        method: &str,
    ) -> Result<()> {
        let scope = tenant.map_or("platform".to_owned(), |t| format!("tenant:{}", t.id));
        let (actor, scope) = match user {
            Some(id) => (id, scope),
            None => (tried.chars().take(200).collect(), "anonymous".to_owned()),
        };
        let action = if ok { "login.success" } else { "login.failure" };
        let entry = NewAuditEntry::new(actor, scope, action, format!("sessions/{method}"));
        self.core.store.append_audit(tenant, &entry).await?;
        Ok(())
    }

    fn tenant_principal(tenant: &Tenant, user: &TenantUser) -> Principal {
        Principal {
            user_id: user.id,
            role: user.role,
            tenant_id: Some(tenant.id),
            org_id: tenant.organization_id,
        }
    }

    async fn tenant_session(
        &self,
        tenant: Tenant,
        user: &TenantUser,
        rotates: Option<&RefreshRecord>,
    ) -> Result<LoginResponse> {
        let principal = Self::tenant_principal(&tenant, user);
        let view = UserView::tenant_user(&tenant, user);
        self.issue_session(principal, Some(tenant), view, rotates)
            .await
    }

    /// Password login. `address` is the client's, for brute-force limits.
    pub async fn login(&self, req: LoginRequest, address: Option<String>) -> Result<LoginResponse> {
        let now = self.core.clock.now();
        let tenant = match req.tenant.as_deref() {
            Some(reference) => Some(self.body_tenant(reference).await?),
            None if !self.multi_tenant => self.core.resolver.default_tenant().await?,
            None => None,
        };
        let scope = tenant
            .as_ref()
            .map_or("platform".to_owned(), |t| t.id.to_string());
        let account = format!("{scope}/{}", req.email.trim());
        // Counted before the password is checked: parallel guesses cannot
        // outrun the limit. A success gives the attempt back.
        self.login_guard
            .login_attempt(&account, address.as_deref(), now)
            .await
            .map_err(|secs| Error::RateLimited {
                retry_after_secs: secs,
            })?;

        // Platform users first (without a tenant); in single-tenant mode the
        // default tenant's users may also log in without naming it.
        if req.tenant.is_none() {
            let platform = self
                .core
                .store
                .platform_user_by_email(req.email.trim())
                .await?;
            if platform.is_some() || tenant.is_none() {
                let hash = platform.as_ref().map(|u| u.password_hash.clone());
                let ok = password::verify(req.password, hash).await?;
                let actor = platform.as_ref().map(|u| u.id.to_string());
                self.audit_login(None, actor, req.email.trim(), ok, "password")
                    .await?;
                return match platform.filter(|_| ok) {
                    Some(user) => {
                        self.login_guard
                            .login_succeeded(&account, address.as_deref())
                            .await;
                        let principal = Principal {
                            user_id: user.id,
                            role: user.role,
                            tenant_id: None,
                            org_id: user.organization_id,
                        };
                        self.issue_session(principal, None, UserView::platform_user(&user), None)
                            .await
                    }
                    None => Err(Error::Unauthorized),
                };
            }
        }
        let Some(tenant) = tenant else {
            return Err(Error::Unauthorized);
        };
        let user = self
            .core
            .store
            .user_by_email(&tenant, req.email.trim())
            .await?
            .filter(|u| u.active);
        let hash = user.as_ref().and_then(|u| u.password_hash.clone());
        let ok = password::verify(req.password, hash).await?;
        let actor = user.as_ref().map(|u| u.id.to_string());
        self.audit_login(Some(&tenant), actor, req.email.trim(), ok, "password")
            .await?;
        match user.filter(|_| ok) {
            Some(user) => {
                self.login_guard
                    .login_succeeded(&account, address.as_deref())
                    .await;
                self.tenant_session(tenant, &user, None).await
            }
            None => Err(Error::Unauthorized),
        }
    }

    /// Rotates a refresh token. A token used twice means it was stolen: the
    /// whole family is revoked, the thief's copy and the owner's alike.
    pub async fn refresh(&self, token: &str) -> Result<LoginResponse> {
        let now = self.core.clock.now();
        let hash = hash_refresh(token);
        let record = self
            .core
            .store
            .refresh_by_hash(&hash)
            .await?
            .ok_or(Error::Unauthorized)?;
        if record.used_at.is_some() || record.revoked_at.is_some() {
            self.core.store.revoke_family(record.family_id, now).await?;
            tracing::warn!(family = %record.family_id, "refresh token reuse: family revoked");
            self.audit_session(&record, "session.reuse_revoked").await?;
            return Err(Error::Unauthorized);
        }
        if record.expires_at <= now {
            return Err(Error::Unauthorized);
        }
        if !self.core.store.spend_refresh(&hash, now).await? {
            self.core.store.revoke_family(record.family_id, now).await?;
            return Err(Error::Unauthorized);
        }
        match record.tenant_id {
            None => {
                let user = self
                    .core
                    .store
                    .platform_user(record.user_id)
                    .await?
                    .ok_or(Error::Unauthorized)?;
                let principal = Principal {
                    user_id: user.id,
                    role: user.role,
                    tenant_id: None,
                    org_id: user.organization_id,
                };
                self.issue_session(
                    principal,
                    None,
                    UserView::platform_user(&user),
                    Some(&record),
                )
                .await
            }
            Some(tid) => {
                let tenant = self
                    .body_tenant(&tid.to_string())
                    .await
                    .map_err(|e| match e {
                        Error::TenantNotFound => Error::Unauthorized,
                        other => other,
                    })?;
                let user = self
                    .core
                    .store
                    .user(&tenant, record.user_id)
                    .await?
                    .filter(|u| u.active)
                    .ok_or(Error::Unauthorized)?;
                self.tenant_session(tenant, &user, Some(&record)).await
            }
        }
    }

    /// Revokes the token's whole family. Unknown tokens are ignored: logout is idempotent.
    pub async fn logout(&self, token: &str) -> Result<()> {
        if let Some(record) = self
            .core
            .store
            .refresh_by_hash(&hash_refresh(token))
            .await?
        {
            self.core
                .store
                .revoke_family(record.family_id, self.core.clock.now())
                .await?;
            self.audit_session(&record, "logout").await?;
        }
        Ok(())
    }

    /// Records a change to a session (its token family) in its user's
    /// chain: the tenant's, or the platform's for platform users.
    async fn audit_session(&self, record: &RefreshRecord, action: &str) -> Result<()> {
        let (tenant, scope) = match record.tenant_id {
            None => (None, "platform".to_owned()),
            Some(tid) => match self.core.store.tenant_by_id(tid).await? {
                Some(t) => (Some(t), format!("tenant:{tid}")),
                // The tenant is gone, and its sessions with it.
                None => return Ok(()),
            },
        };
        let resource = format!("sessions/{}", record.family_id);
        let entry = NewAuditEntry::new(record.user_id.to_string(), scope, action, resource);
        self.core
            .store
            .append_audit(tenant.as_ref(), &entry)
            .await?;
        Ok(())
    }

    /// The signed-in user (verified to still exist by the extractor).
    pub async fn me(&self, principal: &Principal) -> Result<Me> {
        match principal.tenant_id {
            None => {
                let user = self
                    .core
                    .store
                    .platform_user(principal.user_id)
                    .await?
                    .ok_or(Error::Unauthorized)?;
                Ok(Me {
                    user: UserView::platform_user(&user),
                    tenant: None,
                })
            }
            Some(tid) => {
                let tenant = self
                    .core
                    .find_tenant(&tid.to_string())
                    .await?
                    .ok_or(Error::Unauthorized)?;
                let user = self
                    .core
                    .store
                    .user(&tenant, principal.user_id)
                    .await?
                    .ok_or(Error::Unauthorized)?;
                Ok(Me {
                    user: UserView::tenant_user(&tenant, &user),
                    tenant: Some(tenant),
                })
            }
        }
    }

    /// Self-registration, where the tenant's `auth.self_registration` allows it.
    pub async fn register(&self, req: RegisterRequest) -> Result<LoginResponse> {
        let tenant = self.body_tenant(&req.tenant).await?;
        if !self.config_flag(&tenant, "auth.self_registration").await? {
            return Err(Error::Forbidden(
                "self-registration is not enabled for this tenant".into(),
            ));
        }
        let view = self
            .insert_tenant_user(
                None,
                &tenant,
                UserSeed {
                    email: req.email,
                    password: Some(req.password),
                    name: req.name,
                    role: Role::User,
                    phone: None,
                },
            )
            .await?;
        let user = self
            .core
            .store
            .user(&tenant, view.id)
            .await?
            .ok_or(Error::Unauthorized)?;
        self.tenant_session(tenant, &user, None).await
    }

    /// Sends a login code to a phone, where the tenant's `auth.otp` allows it.
    /// Phones that may not log in get the same answer but no code, so the
    /// endpoint does not reveal which numbers are registered.
    pub async fn otp_request(&self, req: OtpRequest, address: Option<String>) -> Result<()> {
        let tenant = self.body_tenant(&req.tenant).await?;
        if !self.config_flag(&tenant, "auth.otp").await? {
            return Err(Error::Forbidden(
                "OTP login is not enabled for this tenant".into(),
            ));
        }
        if !super::users::valid_phone(&req.phone) {
            return Err(Error::invalid(
                "phone",
                "must be in E.164 form, e.g. +919876543210",
            ));
        }
        let now = self.core.clock.now();
        // Each request counts, per phone, client address and tenant, so
        // codes can be neither sprayed nor pumped.
        self.login_guard
            .otp_send(tenant.id, &req.phone, address.as_deref(), now)
            .await
            .map_err(|secs| Error::RateLimited {
                retry_after_secs: secs,
            })?;
        let known = self
            .core
            .store
            .user_by_phone(&tenant, &req.phone)
            .await?
            .is_some_and(|u| u.active);
        if !known && !self.config_flag(&tenant, "auth.self_registration").await? {
            return Ok(());
        }
        let code = otp::new_code();
        self.core
            .store
            .put_otp(
                &tenant,
                &OtpRecord {
                    phone: req.phone.clone(),
                    code_hash: otp::hash_code(&self.otp_key, tenant.id, &req.phone, &code),
                    expires_at: now + Duration::seconds(OTP_TTL_SECS),
                    attempts: 0,
                },
            )
            .await?;
        self.otp_sender
            .send(tenant.slug.as_str(), &req.phone, &code)
            .await
    }

    /// Exchanges a code for tokens. Wrong codes count; the fifth voids the code.
    pub async fn otp_verify(&self, req: OtpVerify) -> Result<LoginResponse> {
        let tenant = self.body_tenant(&req.tenant).await?;
        if !self.config_flag(&tenant, "auth.otp").await? {
            return Err(Error::Forbidden(
                "OTP login is not enabled for this tenant".into(),
            ));
        }
        // Every refusal is a failed login, whichever check refused it.
        match self.otp_user(&tenant, &req).await {
            Ok(user) => {
                let id = Some(user.id.to_string());
                self.audit_login(Some(&tenant), id, &req.phone, true, "otp")
                    .await?;
                self.tenant_session(tenant, &user, None).await
            }
            Err(Error::Unauthorized) => {
                self.audit_login(Some(&tenant), None, &req.phone, false, "otp")
                    .await?;
                Err(Error::Unauthorized)
            }
            Err(e) => Err(e),
        }
    }

    /// The user a correct, live, unused code logs in (created on first
    /// login); `Unauthorized` for any other code.
    async fn otp_user(&self, tenant: &Tenant, req: &OtpVerify) -> Result<TenantUser> {
        // The attempt is spent before the code is compared.
        let record = self
            .core
            .store
            .spend_otp_attempt(tenant, &req.phone, OTP_MAX_ATTEMPTS)
            .await?
            .ok_or(Error::Unauthorized)?;
        if record.expires_at <= self.core.clock.now() {
            self.core.store.delete_otp(tenant, &req.phone).await?;
            return Err(Error::Unauthorized);
        }
        let expected = otp::hash_code(&self.otp_key, tenant.id, &req.phone, req.code.trim());
        if expected != record.code_hash {
            if record.attempts >= OTP_MAX_ATTEMPTS {
                self.core.store.delete_otp(tenant, &req.phone).await?;
            }
            return Err(Error::Unauthorized);
        }
        // Only one request may use a correct code.
        if !self
            .core
            .store
            .consume_otp(tenant, &req.phone, &record.code_hash)
            .await?
        {
            return Err(Error::Unauthorized);
        }
        match self.core.store.user_by_phone(tenant, &req.phone).await? {
            Some(user) if user.active => Ok(user),
            Some(_) => Err(Error::Unauthorized),
            None => {
                let seed = UserSeed {
                    email: String::new(),
                    password: None,
                    name: format!("User {}", req.phone),
                    role: Role::User,
                    phone: Some(req.phone.clone()),
                };
                let view = self.insert_tenant_user(None, tenant, seed).await?;
                self.core
                    .store
                    .user(tenant, view.id)
                    .await?
                    .ok_or(Error::Unauthorized)
            }
        }
    }
}
