//! Identity storage: tenant users, refresh tokens, OTP codes, audit entries.
//! Every per-tenant call takes the resolved [`Tenant`].

use super::{PageRequest, StoreResult};
use crate::audit::{AuditEntry, AuditFilter, NewAuditEntry};
use crate::ids::{TenantId, UserId};
use crate::{Role, Tenant};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A user inside one tenant.
#[derive(Clone, Debug, PartialEq)]
pub struct TenantUser {
    pub id: UserId,
    /// Absent for users who registered by phone only.
    pub email: Option<String>,
    pub name: String,
    pub role: Role,
    pub phone: Option<String>,
    /// Absent for users who only ever log in by OTP.
    pub password_hash: Option<String>,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a PATCH of a user sets; `None` leaves a field as it is, so two
/// concurrent PATCHes of different fields both take effect.
#[derive(Clone, Debug, Default)]
pub struct UserChange {
    pub name: Option<String>,
    pub role: Option<Role>,
    pub phone: Option<Option<String>>,
    /// A new password also revokes every refresh token of the user.
    pub password_hash: Option<String>,
    pub active: Option<bool>,
    pub updated_at: DateTime<Utc>,
    /// The role the caller's right to change the user was judged on: the
    /// change applies only while the user still has it.
    pub judged_role: Option<Role>,
}

/// A refresh token, stored only as its hash. Tokens of one login form a
/// family; reuse of a spent token revokes the family.
#[derive(Clone, Debug, PartialEq)]
pub struct RefreshRecord {
    pub token_hash: String,
    pub family_id: Uuid,
    /// `None` for platform users.
    pub tenant_id: Option<TenantId>,
    pub user_id: UserId,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A pending OTP code for one phone of one tenant.
#[derive(Clone, Debug, PartialEq)]
pub struct OtpRecord {
    pub phone: String,
    pub code_hash: String,
    pub expires_at: DateTime<Utc>,
    pub attempts: u32,
}

#[async_trait]
pub trait IdentityStore: Send + Sync + 'static {
    /// Inserts a user unless the tenant already has `max_users` (checked in
    /// the same transaction, so concurrent sign-ups cannot overshoot):
    /// `QuotaExceeded` then, `Conflict("email"|"phone")` on a duplicate.
    async fn insert_user(
        &self,
        tenant: &Tenant,
        user: &TenantUser,
        max_users: Option<u64>,
        audit: &NewAuditEntry,
    ) -> StoreResult<()>;
    async fn user(&self, tenant: &Tenant, id: UserId) -> StoreResult<Option<TenantUser>>;
    async fn user_by_email(&self, tenant: &Tenant, email: &str) -> StoreResult<Option<TenantUser>>;
    async fn user_by_phone(&self, tenant: &Tenant, phone: &str) -> StoreResult<Option<TenantUser>>;
    async fn list_users(&self, tenant: &Tenant, page: &PageRequest)
    -> StoreResult<Vec<TenantUser>>;
    /// Applies `change` in one statement (and, with a new password, revokes
    /// the user's refresh tokens in the same transaction): the user as it
    /// is after, or `None` when it is gone or its role is no longer
    /// `change.judged_role`.
    async fn change_user(
        &self,
        tenant: &Tenant,
        id: UserId,
        change: &UserChange,
        audit: &NewAuditEntry,
    ) -> StoreResult<Option<TenantUser>>;
    /// Deletes the user and its refresh tokens; true when it existed (and audited).
    async fn delete_user(
        &self,
        tenant: &Tenant,
        id: UserId,
        audit: &NewAuditEntry,
    ) -> StoreResult<bool>;
    async fn count_users(&self, tenant: &Tenant) -> StoreResult<u64>;

    /// Stores a new refresh token. `parent`: the spent token it replaces;
    /// the family continues only while that one is not revoked, so a logout
    /// or password change racing the rotation cannot miss the new token.
    /// `NotFound` when refused (parent revoked, tenant gone).
    async fn insert_refresh(&self, record: &RefreshRecord, parent: Option<&str>)
    -> StoreResult<()>;
    async fn refresh_by_hash(&self, token_hash: &str) -> StoreResult<Option<RefreshRecord>>;
    /// Marks a live token spent; false when it was already spent or revoked
    /// (so two concurrent refreshes cannot both succeed).
    async fn spend_refresh(&self, token_hash: &str, at: DateTime<Utc>) -> StoreResult<bool>;
    async fn revoke_family(&self, family_id: Uuid, at: DateTime<Utc>) -> StoreResult<()>;

    async fn put_otp(&self, tenant: &Tenant, otp: &OtpRecord) -> StoreResult<()>;
    async fn otp(&self, tenant: &Tenant, phone: &str) -> StoreResult<Option<OtpRecord>>;
    /// Spends one attempt on the phone's code before it is compared (so
    /// parallel guesses cannot outrun the limit): the record as it is after
    /// the spend, or `None` when there is no code or its `max_attempts` are used.
    async fn spend_otp_attempt(
        &self,
        tenant: &Tenant,
        phone: &str,
        max_attempts: u32,
    ) -> StoreResult<Option<OtpRecord>>;
    /// Deletes the code if it is still `code_hash`; true for the one caller that did.
    async fn consume_otp(&self, tenant: &Tenant, phone: &str, code_hash: &str)
    -> StoreResult<bool>;
    async fn delete_otp(&self, tenant: &Tenant, phone: &str) -> StoreResult<()>;

    /// Appends an event that changes nothing else (a login, an access) to
    /// the tenant's control chain; `None`: the platform chain.
    async fn append_audit(
        &self,
        tenant: Option<&Tenant>,
        entry: &NewAuditEntry,
    ) -> StoreResult<AuditEntry>;
    /// Entries of the tenant's control chain (`None`: the platform chain)
    /// after `after_seq` matching `filter`, in link order, with their seq.
    async fn list_audit(
        &self,
        tenant: Option<&Tenant>,
        filter: &AuditFilter,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<(i64, AuditEntry)>>;
}
