//! PostgreSQL implementation of the identity store.

use super::audit::{self, ChainAt};
use super::{PgControlStore, pg_error, tenant_tx};
use super::{col, count};
use crate::audit::{AuditEntry, AuditFilter, NewAuditEntry};
use crate::ids::{TenantId, UserId};
use crate::store::identity::{IdentityStore, OtpRecord, RefreshRecord, TenantUser, UserChange};
use crate::store::page_limit;
use crate::store::{PageRequest, StoreError, StoreResult, decode};
use crate::{Role, Tenant};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder, Transaction};
use uuid::Uuid;

/// Advisory-lock namespaces (first key of the two-key form), so the
/// per-tenant locks of different jobs never wait on each other.
const LOCK_USERS: i32 = 0x5475_0001;

fn user_from_row(row: &PgRow) -> StoreResult<TenantUser> {
    let role: String = col(row, "role")?;
    Ok(TenantUser {
        id: UserId(col(row, "id")?),
        email: col(row, "email")?,
        name: col(row, "name")?,
        role: decode(&role, Role::parse, "role")?,
        phone: col(row, "phone")?,
        password_hash: col(row, "password_hash")?,
        active: col(row, "active")?,
        created_at: col(row, "created_at")?,
        updated_at: col(row, "updated_at")?,
    })
}

fn refresh_from_row(row: &PgRow) -> StoreResult<RefreshRecord> {
    Ok(RefreshRecord {
        token_hash: col(row, "token_hash")?,
        family_id: col(row, "family_id")?,
        tenant_id: col::<Option<Uuid>>(row, "tenant_id")?.map(TenantId),
        user_id: UserId(col(row, "user_id")?),
        expires_at: col(row, "expires_at")?,
        used_at: col(row, "used_at")?,
        revoked_at: col(row, "revoked_at")?,
    })
}

fn otp_from_row(row: &PgRow) -> StoreResult<OtpRecord> {
    let attempts: i32 = col(row, "attempts")?;
    Ok(OtpRecord {
        phone: col(row, "phone")?,
        code_hash: col(row, "code_hash")?,
        expires_at: col(row, "expires_at")?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
    })
}

/// Serializes the transaction against others holding the same lock for the
/// same tenant, until it ends. Its own statement: under READ COMMITTED the
/// statements after it take a snapshot that sees what the previous holder
/// committed.
async fn lock_tenant(
    tx: &mut sqlx::Transaction<'static, Postgres>,
    namespace: i32,
    t: &Tenant,
) -> StoreResult<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(namespace)
        .bind(t.id.0.to_string())
        .execute(&mut **tx)
        .await
        .map_err(pg_error)?;
    Ok(())
}

impl PgControlStore {
    /// One user of the tenant; `condition` is a fixed fragment of ours.
    async fn user_where<T>(
        &self,
        t: &Tenant,
        condition: &'static str,
        value: T,
    ) -> StoreResult<Option<TenantUser>>
    where
        T: for<'q> sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres> + Send,
    {
        let mut tx = tenant_tx(&self.db.runtime, t.id).await?;
        let row = sqlx::query(&format!(
            "SELECT * FROM users WHERE tenant_id = $1 AND {condition}"
        ))
        .bind(t.id.0)
        .bind(value)
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        row.as_ref().map(user_from_row).transpose()
    }
}

#[async_trait]
impl IdentityStore for PgControlStore {
    async fn insert_user(
        &self,
        t: &Tenant,
        u: &TenantUser,
        max_users: Option<u64>,
        a: &NewAuditEntry,
    ) -> StoreResult<()> {
        let mut tx = tenant_tx(&self.db.runtime, t.id).await?;
        // Concurrent sign-ups of one tenant queue here, so the count below
        // includes every user committed before this one.
        lock_tenant(&mut tx, LOCK_USERS, t).await?;
        super::require_live(&mut tx, t).await?;
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE tenant_id = $1")
            .bind(t.id.0)
            .fetch_one(&mut *tx)
            .await
            .map_err(pg_error)?;
        if max_users.is_some_and(|max| count(n) >= max) {
            return Err(StoreError::QuotaExceeded);
        }
        sqlx::query(
            "INSERT INTO users (tenant_id, id, email, name, role, phone, password_hash, active, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(t.id.0)
        .bind(u.id.0)
        .bind(&u.email)
        .bind(&u.name)
        .bind(u.role.as_str())
        .bind(&u.phone)
        .bind(&u.password_hash)
        .bind(u.active)
        .bind(u.created_at)
        .bind(u.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        audit::append_at(&mut tx, &ChainAt::control(t.id), a, self.clock.now()).await?;
        tx.commit().await.map_err(pg_error)
    }

    async fn user(&self, t: &Tenant, id: UserId) -> StoreResult<Option<TenantUser>> {
        self.user_where(t, "id = $2", id.0).await
    }

    async fn user_by_email(&self, t: &Tenant, email: &str) -> StoreResult<Option<TenantUser>> {
        self.user_where(t, "lower(email) = lower($2)", email.to_owned())
            .await
    }

    async fn user_by_phone(&self, t: &Tenant, phone: &str) -> StoreResult<Option<TenantUser>> {
        self.user_where(t, "phone = $2", phone.to_owned()).await
    }

    async fn list_users(&self, t: &Tenant, page: &PageRequest) -> StoreResult<Vec<TenantUser>> {
        let mut tx = tenant_tx(&self.db.runtime, t.id).await?;
        // The cursor condition is added only when there is one, so the
        // plan stays a range scan of the primary key.
        let mut q = QueryBuilder::<Postgres>::new("SELECT * FROM users WHERE tenant_id = ");
        q.push_bind(t.id.0);
        if let Some(after) = page.after {
            q.push(" AND id > ").push_bind(after);
        }
        q.push(" ORDER BY id LIMIT ").push_bind(page_limit(page));
        let rows = q.build().fetch_all(&mut *tx).await.map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        rows.iter().map(user_from_row).collect()
    }

    async fn change_user(
        &self,
        t: &Tenant,
        id: UserId,
        c: &UserChange,
        a: &NewAuditEntry,
    ) -> StoreResult<Option<TenantUser>> {
        let mut tx = tenant_tx(&self.db.runtime, t.id).await?;
        let row = sqlx::query(
            "UPDATE users SET name = COALESCE($1, name), role = COALESCE($2, role),
                    phone = CASE WHEN $3 THEN $4 ELSE phone END,
                    password_hash = COALESCE($5, password_hash),
                    active = COALESCE($6, active), updated_at = $7
             WHERE tenant_id = $8 AND id = $9 AND ($10::text IS NULL OR role = $10)
             RETURNING *",
        )
        .bind(&c.name)
        .bind(c.role.map(|r| r.as_str()))
        .bind(c.phone.is_some())
        .bind(c.phone.clone().flatten())
        .bind(&c.password_hash)
        .bind(c.active)
        .bind(c.updated_at)
        .bind(t.id.0)
        .bind(id.0)
        .bind(c.judged_role.map(|r| r.as_str()))
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg_error)?;
        let Some(row) = row else {
            return Ok(None);
        };
        if c.password_hash.is_some() {
            revoke_refresh(&mut tx, Revoke::User(t.id, id), c.updated_at).await?;
        }
        audit::append_at(&mut tx, &ChainAt::control(t.id), a, self.clock.now()).await?;
        tx.commit().await.map_err(pg_error)?;
        user_from_row(&row).map(Some)
    }

    async fn delete_user(&self, t: &Tenant, id: UserId, a: &NewAuditEntry) -> StoreResult<bool> {
        let mut tx = tenant_tx(&self.db.runtime, t.id).await?;
        sqlx::query("DELETE FROM refresh_tokens WHERE tenant_id = $1 AND user_id = $2")
            .bind(t.id.0)
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        let done = sqlx::query("DELETE FROM users WHERE tenant_id = $1 AND id = $2")
            .bind(t.id.0)
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        let deleted = done.rows_affected() > 0;
        if deleted {
            audit::append_at(&mut tx, &ChainAt::control(t.id), a, self.clock.now()).await?;
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(deleted)
    }

    async fn count_users(&self, t: &Tenant) -> StoreResult<u64> {
        let mut tx = tenant_tx(&self.db.runtime, t.id).await?;
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE tenant_id = $1")
            .bind(t.id.0)
            .fetch_one(&mut *tx)
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(count(n))
    }

    async fn insert_refresh(&self, r: &RefreshRecord, parent: Option<&str>) -> StoreResult<()> {
        // A tenant user's token only while its tenant lives: a login racing
        // the tenant's deletion must not leave a token behind the purge.
        // A rotation only while its parent is not revoked; the share lock
        // on the parent makes a revocation in progress finish first (then
        // this sees it), or wait for this insert (then its second look,
        // see `revoke_refresh`, finds the new token).
        let done = sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family_id, tenant_id, user_id, expires_at, used_at, revoked_at)
             SELECT $1, $2, $3, $4, $5, $6, $7
             WHERE ($3::uuid IS NULL OR EXISTS (
                 SELECT 1 FROM tenants WHERE id = $3 AND status IN ('active', 'suspended') FOR SHARE))
               AND ($8::text IS NULL OR EXISTS (
                 SELECT 1 FROM refresh_tokens WHERE token_hash = $8 AND revoked_at IS NULL FOR SHARE))",
        )
        .bind(&r.token_hash)
        .bind(r.family_id)
        .bind(r.tenant_id.map(|t| t.0))
        .bind(r.user_id.0)
        .bind(r.expires_at)
        .bind(r.used_at)
        .bind(r.revoked_at)
        .bind(parent)
        .execute(&self.db.runtime)
        .await
        .map_err(|e| match pg_error(e) {
            // The primary key is the hash (SQLite names it "hash" too).
            StoreError::Conflict(_) => StoreError::Conflict("hash".into()),
            other => other,
        })?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn refresh_by_hash(&self, token_hash: &str) -> StoreResult<Option<RefreshRecord>> {
        sqlx::query("SELECT * FROM refresh_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&self.db.runtime)
            .await
            .map_err(pg_error)?
            .as_ref()
            .map(refresh_from_row)
            .transpose()
    }

    async fn spend_refresh(&self, token_hash: &str, at: DateTime<Utc>) -> StoreResult<bool> {
        // One UPDATE: the row lock plus the re-checked WHERE let exactly one
        // of two concurrent spends through.
        let done = sqlx::query(
            "UPDATE refresh_tokens SET used_at = $1
             WHERE token_hash = $2 AND used_at IS NULL AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(token_hash)
        .execute(&self.db.runtime)
        .await
        .map_err(pg_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn revoke_family(&self, family_id: Uuid, at: DateTime<Utc>) -> StoreResult<()> {
        let mut tx = self.db.runtime.begin().await.map_err(pg_error)?;
        revoke_refresh(&mut tx, Revoke::Family(family_id), at).await?;
        tx.commit().await.map_err(pg_error)
    }

    async fn put_otp(&self, t: &Tenant, otp: &OtpRecord) -> StoreResult<()> {
        let mut tx = tenant_tx(&self.db.runtime, t.id).await?;
        super::require_live(&mut tx, t).await?;
        sqlx::query(
            "INSERT INTO otp_codes (tenant_id, phone, code_hash, expires_at, attempts)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (tenant_id, phone) DO UPDATE
             SET code_hash = excluded.code_hash, expires_at = excluded.expires_at, attempts = excluded.attempts",
        )
        .bind(t.id.0)
        .bind(&otp.phone)
        .bind(&otp.code_hash)
        .bind(otp.expires_at)
        .bind(i32::try_from(otp.attempts).unwrap_or(i32::MAX))
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)
    }

    async fn otp(&self, t: &Tenant, phone: &str) -> StoreResult<Option<OtpRecord>> {
        let mut tx = tenant_tx(&self.db.runtime, t.id).await?;
        let row = sqlx::query("SELECT * FROM otp_codes WHERE tenant_id = $1 AND phone = $2")
            .bind(t.id.0)
            .bind(phone)
            .fetch_optional(&mut *tx)
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        row.as_ref().map(otp_from_row).transpose()
    }

    async fn spend_otp_attempt(
        &self,
        t: &Tenant,
        phone: &str,
        max_attempts: u32,
    ) -> StoreResult<Option<OtpRecord>> {
        // One UPDATE: concurrent guesses queue on the row lock and each
        // re-checks `attempts < max` against the latest count.
        let mut tx = tenant_tx(&self.db.runtime, t.id).await?;
        let row = sqlx::query(
            "UPDATE otp_codes SET attempts = attempts + 1
             WHERE tenant_id = $1 AND phone = $2 AND attempts < $3
             RETURNING phone, code_hash, expires_at, attempts",
        )
        .bind(t.id.0)
        .bind(phone)
        .bind(i64::from(max_attempts))
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        row.as_ref().map(otp_from_row).transpose()
    }

    async fn consume_otp(&self, t: &Tenant, phone: &str, code_hash: &str) -> StoreResult<bool> {
        let mut tx = tenant_tx(&self.db.runtime, t.id).await?;
        let done = sqlx::query(
            "DELETE FROM otp_codes WHERE tenant_id = $1 AND phone = $2 AND code_hash = $3",
        )
        .bind(t.id.0)
        .bind(phone)
        .bind(code_hash)
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_otp(&self, t: &Tenant, phone: &str) -> StoreResult<()> {
        let mut tx = tenant_tx(&self.db.runtime, t.id).await?;
        sqlx::query("DELETE FROM otp_codes WHERE tenant_id = $1 AND phone = $2")
            .bind(t.id.0)
            .bind(phone)
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)
    }

    async fn append_audit(
        &self,
        t: Option<&Tenant>,
        new: &NewAuditEntry,
    ) -> StoreResult<AuditEntry> {
        let mut tx = self.chain_tx(t).await?;
        let entry = audit::append_at(&mut tx, &chain_of(t), new, self.clock.now()).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(entry)
    }

    async fn list_audit(
        &self,
        t: Option<&Tenant>,
        filter: &AuditFilter,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<(i64, AuditEntry)>> {
        let mut tx = self.chain_tx(t).await?;
        let entries = audit::list(&mut tx, &chain_of(t), filter, after_seq, limit).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(entries)
    }
}

/// A tenant's control chain, or the platform chain.
fn chain_of(t: Option<&Tenant>) -> ChainAt {
    t.map_or_else(ChainAt::platform, |t| ChainAt::control(t.id))
}

impl PgControlStore {
    /// A transaction a chain can be read and written in: the tenant's
    /// (row-level security) or a plain one for the platform chain.
    async fn chain_tx(&self, t: Option<&Tenant>) -> StoreResult<Transaction<'static, Postgres>> {
        match t {
            Some(t) => tenant_tx(&self.db.runtime, t.id).await,
            None => self.db.runtime.begin().await.map_err(pg_error),
        }
    }
}

/// Whose refresh tokens to revoke.
enum Revoke {
    Family(Uuid),
    User(TenantId, UserId),
}

/// Revokes refresh tokens, including one a concurrent rotation is
/// inserting: the rows are locked first, which waits for a rotation holding
/// its parent, and the UPDATE that follows is a new statement whose
/// snapshot holds the rotation's new token.
async fn revoke_refresh(
    tx: &mut sqlx::PgConnection,
    whose: Revoke,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    let (lock, update) = match whose {
        Revoke::Family(family) => (
            sqlx::query("SELECT 1 FROM refresh_tokens WHERE family_id = $1 FOR UPDATE").bind(family),
            sqlx::query(
                "UPDATE refresh_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL",
            )
            .bind(family)
            .bind(at),
        ),
        Revoke::User(tenant, user) => (
            sqlx::query(
                "SELECT 1 FROM refresh_tokens WHERE tenant_id = $1 AND user_id = $2 FOR UPDATE",
            )
            .bind(tenant.0)
            .bind(user.0),
            sqlx::query(
                "UPDATE refresh_tokens SET revoked_at = $3
                 WHERE tenant_id = $1 AND user_id = $2 AND revoked_at IS NULL",
            )
            .bind(tenant.0)
            .bind(user.0)
            .bind(at),
        ),
    };
    lock.execute(&mut *tx).await.map_err(pg_error)?;
    update.execute(&mut *tx).await.map_err(pg_error)?;
    Ok(())
}
