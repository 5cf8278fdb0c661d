//! SQLite implementation of the identity store.

use super::audit::{self, ChainAt};
use super::{
    SqliteControlStore, begin_write, control_chain, db_error, opt_uuid_col, require_live, uuid_col,
};
use crate::audit::{AuditEntry, AuditFilter, NewAuditEntry};
use crate::ids::UserId;
use crate::store::identity::{IdentityStore, OtpRecord, RefreshRecord, TenantUser, UserChange};
use crate::store::page_limit;
use crate::store::{PageRequest, StoreError, StoreResult, decode};
use crate::{Role, Tenant};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use uuid::Uuid;

fn user_from_row(row: &SqliteRow) -> StoreResult<TenantUser> {
    let role: String = row.try_get("role").map_err(db_error)?;
    Ok(TenantUser {
        id: uuid_col(row, "id")?,
        email: row.try_get("email").map_err(db_error)?,
        name: row.try_get("name").map_err(db_error)?,
        role: decode(&role, Role::parse, "role")?,
        phone: row.try_get("phone").map_err(db_error)?,
        password_hash: row.try_get("password_hash").map_err(db_error)?,
        active: row.try_get("active").map_err(db_error)?,
        created_at: row.try_get("created_at").map_err(db_error)?,
        updated_at: row.try_get("updated_at").map_err(db_error)?,
    })
}

fn refresh_from_row(row: &SqliteRow) -> StoreResult<RefreshRecord> {
    Ok(RefreshRecord {
        token_hash: row.try_get("token_hash").map_err(db_error)?,
        family_id: uuid_col(row, "family_id")?,
        tenant_id: opt_uuid_col(row, "tenant_id")?,
        user_id: uuid_col(row, "user_id")?,
        expires_at: row.try_get("expires_at").map_err(db_error)?,
        used_at: row.try_get("used_at").map_err(db_error)?,
        revoked_at: row.try_get("revoked_at").map_err(db_error)?,
    })
}

impl SqliteControlStore {
    /// One user of the tenant; `condition` is a fixed fragment of ours.
    async fn user_where(
        &self,
        t: &Tenant,
        condition: &'static str,
        value: String,
    ) -> StoreResult<Option<TenantUser>> {
        sqlx::query(&format!(
            "SELECT * FROM users WHERE tenant_id = ? AND {condition}"
        ))
        .bind(t.id.to_string())
        .bind(value)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?
        .as_ref()
        .map(user_from_row)
        .transpose()
    }
}

#[async_trait]
impl IdentityStore for SqliteControlStore {
    async fn insert_user(
        &self,
        t: &Tenant,
        u: &TenantUser,
        max_users: Option<u64>,
        a: &NewAuditEntry,
    ) -> StoreResult<()> {
        let mut tx = begin_write(&self.pool).await?;
        require_live(&mut tx, t).await?;
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE tenant_id = ?")
            .bind(t.id.to_string())
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
        if max_users.is_some_and(|max| count.max(0) as u64 >= max) {
            return Err(StoreError::QuotaExceeded);
        }
        sqlx::query(
            "INSERT INTO users (tenant_id, id, email, name, role, phone, password_hash, active, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(t.id.to_string())
        .bind(u.id.to_string())
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
        .map_err(db_error)?;
        audit::append_at(&mut tx, &control_chain(t), a, self.clock.now()).await?;
        tx.commit().await.map_err(db_error)
    }

    async fn user(&self, t: &Tenant, id: UserId) -> StoreResult<Option<TenantUser>> {
        self.user_where(t, "id = ?", id.to_string()).await
    }

    async fn user_by_email(&self, t: &Tenant, email: &str) -> StoreResult<Option<TenantUser>> {
        self.user_where(t, "lower(email) = lower(?)", email.to_owned())
            .await
    }

    async fn user_by_phone(&self, t: &Tenant, phone: &str) -> StoreResult<Option<TenantUser>> {
        self.user_where(t, "phone = ?", phone.to_owned()).await
    }

    async fn list_users(&self, t: &Tenant, page: &PageRequest) -> StoreResult<Vec<TenantUser>> {
        let after = page.after.map(|a| a.to_string()).unwrap_or_default();
        sqlx::query("SELECT * FROM users WHERE tenant_id = ? AND id > ? ORDER BY id LIMIT ?")
            .bind(t.id.to_string())
            .bind(after)
            .bind(page_limit(page))
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?
            .iter()
            .map(user_from_row)
            .collect()
    }

    async fn change_user(
        &self,
        t: &Tenant,
        id: UserId,
        c: &UserChange,
        a: &NewAuditEntry,
    ) -> StoreResult<Option<TenantUser>> {
        let mut tx = begin_write(&self.pool).await?;
        let row = sqlx::query(
            "UPDATE users SET name = COALESCE(?1, name), role = COALESCE(?2, role),
                    phone = CASE WHEN ?3 THEN ?4 ELSE phone END,
                    password_hash = COALESCE(?5, password_hash),
                    active = COALESCE(?6, active), updated_at = ?7
             WHERE tenant_id = ?8 AND id = ?9 AND (?10 IS NULL OR role = ?10)
             RETURNING *",
        )
        .bind(&c.name)
        .bind(c.role.map(|r| r.as_str()))
        .bind(c.phone.is_some())
        .bind(c.phone.clone().flatten())
        .bind(&c.password_hash)
        .bind(c.active)
        .bind(c.updated_at)
        .bind(t.id.to_string())
        .bind(id.to_string())
        .bind(c.judged_role.map(|r| r.as_str()))
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let user = user_from_row(&row)?;
        if c.password_hash.is_some() {
            sqlx::query(
                "UPDATE refresh_tokens SET revoked_at = ?1
                 WHERE tenant_id = ?2 AND user_id = ?3 AND revoked_at IS NULL",
            )
            .bind(c.updated_at)
            .bind(t.id.to_string())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        }
        audit::append_at(&mut tx, &control_chain(t), a, self.clock.now()).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(Some(user))
    }

    async fn delete_user(&self, t: &Tenant, id: UserId, a: &NewAuditEntry) -> StoreResult<bool> {
        let mut tx = begin_write(&self.pool).await?;
        sqlx::query("DELETE FROM refresh_tokens WHERE tenant_id = ? AND user_id = ?")
            .bind(t.id.to_string())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let done = sqlx::query("DELETE FROM users WHERE tenant_id = ? AND id = ?")
            .bind(t.id.to_string())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let deleted = done.rows_affected() > 0;
        if deleted {
            audit::append_at(&mut tx, &control_chain(t), a, self.clock.now()).await?;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(deleted)
    }

    async fn count_users(&self, t: &Tenant) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE tenant_id = ?")
            .bind(t.id.to_string())
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(n.max(0) as u64)
    }

    async fn insert_refresh(&self, r: &RefreshRecord, parent: Option<&str>) -> StoreResult<()> {
        // A tenant user's token only while its tenant lives: a login racing
        // the tenant's deletion must not leave a token behind the purge.
        // A rotation only while its parent is not revoked (writes are
        // serial here: a revocation either came first or sees this token).
        let tenant = r.tenant_id.map(|t| t.to_string());
        let done = sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family_id, tenant_id, user_id, expires_at, used_at, revoked_at)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7
             WHERE (?3 IS NULL OR EXISTS (SELECT 1 FROM tenants WHERE id = ?3 AND status IN ('active', 'suspended')))
               AND (?8 IS NULL OR EXISTS (SELECT 1 FROM refresh_tokens WHERE token_hash = ?8 AND revoked_at IS NULL))",
        )
        .bind(&r.token_hash)
        .bind(r.family_id.to_string())
        .bind(tenant)
        .bind(r.user_id.to_string())
        .bind(r.expires_at)
        .bind(r.used_at)
        .bind(r.revoked_at)
        .bind(parent)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn refresh_by_hash(&self, token_hash: &str) -> StoreResult<Option<RefreshRecord>> {
        sqlx::query("SELECT * FROM refresh_tokens WHERE token_hash = ?")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?
            .as_ref()
            .map(refresh_from_row)
            .transpose()
    }

    async fn spend_refresh(&self, token_hash: &str, at: DateTime<Utc>) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE refresh_tokens SET used_at = ? WHERE token_hash = ? AND used_at IS NULL AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(token_hash)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn revoke_family(&self, family_id: Uuid, at: DateTime<Utc>) -> StoreResult<()> {
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = ? WHERE family_id = ? AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(family_id.to_string())
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn put_otp(&self, t: &Tenant, otp: &OtpRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO otp_codes (tenant_id, phone, code_hash, expires_at, attempts)
             SELECT ?1, ?2, ?3, ?4, ?5
             WHERE EXISTS (SELECT 1 FROM tenants WHERE id = ?1 AND status IN ('active', 'suspended'))
             ON CONFLICT (tenant_id, phone) DO UPDATE
             SET code_hash = excluded.code_hash, expires_at = excluded.expires_at, attempts = excluded.attempts",
        )
        .bind(t.id.to_string())
        .bind(&otp.phone)
        .bind(&otp.code_hash)
        .bind(otp.expires_at)
        .bind(i64::from(otp.attempts))
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn otp(&self, t: &Tenant, phone: &str) -> StoreResult<Option<OtpRecord>> {
        let row = sqlx::query("SELECT * FROM otp_codes WHERE tenant_id = ? AND phone = ?")
            .bind(t.id.to_string())
            .bind(phone)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.map(|row| {
            let attempts: i64 = row.try_get("attempts").map_err(db_error)?;
            Ok(OtpRecord {
                phone: row.try_get("phone").map_err(db_error)?,
                code_hash: row.try_get("code_hash").map_err(db_error)?,
                expires_at: row.try_get("expires_at").map_err(db_error)?,
                attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            })
        })
        .transpose()
    }

    async fn spend_otp_attempt(
        &self,
        t: &Tenant,
        phone: &str,
        max_attempts: u32,
    ) -> StoreResult<Option<OtpRecord>> {
        let row: Option<(String, String, chrono::DateTime<Utc>, i64)> = sqlx::query_as(
            "UPDATE otp_codes SET attempts = attempts + 1
             WHERE tenant_id = ? AND phone = ? AND attempts < ?
             RETURNING phone, code_hash, expires_at, attempts",
        )
        .bind(t.id.to_string())
        .bind(phone)
        .bind(i64::from(max_attempts))
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(
            row.map(|(phone, code_hash, expires_at, attempts)| OtpRecord {
                phone,
                code_hash,
                expires_at,
                attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            }),
        )
    }

    async fn consume_otp(&self, t: &Tenant, phone: &str, code_hash: &str) -> StoreResult<bool> {
        let done = sqlx::query(
            "DELETE FROM otp_codes WHERE tenant_id = ? AND phone = ? AND code_hash = ?",
        )
        .bind(t.id.to_string())
        .bind(phone)
        .bind(code_hash)
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_otp(&self, t: &Tenant, phone: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM otp_codes WHERE tenant_id = ? AND phone = ?")
            .bind(t.id.to_string())
            .bind(phone)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn append_audit(
        &self,
        t: Option<&Tenant>,
        new: &NewAuditEntry,
    ) -> StoreResult<AuditEntry> {
        let mut tx = begin_write(&self.pool).await?;
        let entry = audit::append_at(&mut tx, &chain_of(t), new, self.clock.now()).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(entry)
    }

    async fn list_audit(
        &self,
        t: Option<&Tenant>,
        filter: &AuditFilter,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<(i64, AuditEntry)>> {
        audit::list(&self.pool, &chain_of(t), filter, after_seq, limit).await
    }
}

/// A tenant's control chain, or the platform chain.
fn chain_of(t: Option<&Tenant>) -> ChainAt {
    t.map_or_else(ChainAt::platform, control_chain)
}
