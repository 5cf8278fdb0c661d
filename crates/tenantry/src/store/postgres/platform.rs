//! The platform's own records on PostgreSQL: staff users, plans,
//! organizations.

use super::control::PgControlStore;
use crate::Role;
use crate::audit::NewAuditEntry;
use crate::ids::{OrgId, UserId};
use crate::plan::Plan;
use crate::store::postgres::audit::{self, ChainAt};
use crate::store::postgres::{col, count, pg_error};
use crate::store::{
    Organization, PageRequest, PlatformStore, PlatformUser, StoreError, StoreResult, decode,
};
use async_trait::async_trait;
use sqlx::Postgres;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use uuid::Uuid;

pub(super) fn platform_user_from_row(row: &PgRow) -> StoreResult<PlatformUser> {
    let role: String = col(row, "role")?;
    Ok(PlatformUser {
        id: UserId(col(row, "id")?),
        email: col(row, "email")?,
        name: col(row, "name")?,
        password_hash: col(row, "password_hash")?,
        role: decode(&role, Role::parse, "role")?,
        organization_id: col::<Option<Uuid>>(row, "organization_id")?.map(OrgId),
        created_at: col(row, "created_at")?,
    })
}

pub(super) fn org_from_row(row: &PgRow) -> StoreResult<Organization> {
    Ok(Organization {
        id: OrgId(col(row, "id")?),
        name: col(row, "name")?,
        description: col(row, "description")?,
        created_at: col(row, "created_at")?,
    })
}

pub(super) fn plan_from_row(row: &PgRow) -> StoreResult<Plan> {
    serde_json::from_value(col(row, "body")?)
        .map_err(|e| StoreError::Internal(format!("bad plan in store: {e}")))
}

#[async_trait]
impl PlatformStore for PgControlStore {
    async fn insert_platform_user(&self, u: &PlatformUser, a: &NewAuditEntry) -> StoreResult<()> {
        let mut tx = self.db.runtime.begin().await.map_err(pg_error)?;
        sqlx::query(
            "INSERT INTO platform_users (id, email, name, password_hash, role, organization_id, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(u.id.0)
        .bind(&u.email)
        .bind(&u.name)
        .bind(&u.password_hash)
        .bind(u.role.as_str())
        .bind(u.organization_id.map(|o| o.0))
        .bind(u.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| match pg_error(e) {
            StoreError::Conflict(_) => StoreError::Conflict("email".into()),
            other => other,
        })?;
        audit::append_at(&mut tx, &ChainAt::platform(), a, self.clock.now()).await?;
        tx.commit().await.map_err(pg_error)
    }

    async fn platform_user_by_email(&self, email: &str) -> StoreResult<Option<PlatformUser>> {
        sqlx::query("SELECT * FROM platform_users WHERE lower(email) = lower($1)")
            .bind(email)
            .fetch_optional(&self.db.runtime)
            .await
            .map_err(pg_error)?
            .as_ref()
            .map(platform_user_from_row)
            .transpose()
    }

    async fn platform_user(&self, id: UserId) -> StoreResult<Option<PlatformUser>> {
        sqlx::query("SELECT * FROM platform_users WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&self.db.runtime)
            .await
            .map_err(pg_error)?
            .as_ref()
            .map(platform_user_from_row)
            .transpose()
    }

    async fn count_super_admins(&self) -> StoreResult<u64> {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM platform_users WHERE role = 'super_admin'")
                .fetch_one(&self.db.runtime)
                .await
                .map_err(pg_error)?;
        Ok(count(n))
    }

    async fn list_plans(&self) -> StoreResult<Vec<Plan>> {
        sqlx::query("SELECT body FROM plans ORDER BY code")
            .fetch_all(&self.db.runtime)
            .await
            .map_err(pg_error)?
            .iter()
            .map(plan_from_row)
            .collect()
    }

    async fn plan(&self, code: &str) -> StoreResult<Option<Plan>> {
        sqlx::query("SELECT body FROM plans WHERE code = $1")
            .bind(code)
            .fetch_optional(&self.db.runtime)
            .await
            .map_err(pg_error)?
            .as_ref()
            .map(plan_from_row)
            .transpose()
    }

    async fn upsert_plan(&self, plan: &Plan, a: &NewAuditEntry) -> StoreResult<bool> {
        let mut tx = self.db.runtime.begin().await.map_err(pg_error)?;
        // One statement: `xmax = 0` holds for a freshly inserted row only, so
        // "was it new" is answered atomically with the write.
        let inserted: bool = sqlx::query_scalar(
            "INSERT INTO plans (code, body) VALUES ($1, $2)
             ON CONFLICT (code) DO UPDATE SET body = excluded.body
             RETURNING (xmax = 0)",
        )
        .bind(&plan.code)
        .bind(Json(plan))
        .fetch_one(&mut *tx)
        .await
        .map_err(pg_error)?;
        audit::append_at(&mut tx, &ChainAt::platform(), a, self.clock.now()).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(inserted)
    }

    async fn seed_plans(&self, plans: &[Plan]) -> StoreResult<()> {
        for plan in plans {
            sqlx::query(
                "INSERT INTO plans (code, body) VALUES ($1, $2) ON CONFLICT (code) DO NOTHING",
            )
            .bind(&plan.code)
            .bind(Json(plan))
            .execute(&self.db.runtime)
            .await
            .map_err(pg_error)?;
        }
        Ok(())
    }

    async fn insert_org(&self, org: &Organization, a: &NewAuditEntry) -> StoreResult<()> {
        let mut tx = self.db.runtime.begin().await.map_err(pg_error)?;
        sqlx::query(
            "INSERT INTO organizations (id, name, description, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(org.id.0)
        .bind(&org.name)
        .bind(&org.description)
        .bind(org.created_at)
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        audit::append_at(&mut tx, &ChainAt::platform(), a, self.clock.now()).await?;
        tx.commit().await.map_err(pg_error)
    }

    async fn org(&self, id: OrgId) -> StoreResult<Option<Organization>> {
        sqlx::query("SELECT * FROM organizations WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&self.db.runtime)
            .await
            .map_err(pg_error)?
            .as_ref()
            .map(org_from_row)
            .transpose()
    }

    async fn list_orgs(
        &self,
        only: Option<OrgId>,
        page: &PageRequest,
    ) -> StoreResult<Vec<Organization>> {
        crate::store::listing::orgs::<Postgres>(only, page)
            .build()
            .fetch_all(&self.db.runtime)
            .await
            .map_err(pg_error)?
            .iter()
            .map(org_from_row)
            .collect()
    }
}
