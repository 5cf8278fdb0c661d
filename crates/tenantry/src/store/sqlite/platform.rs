//! The platform's own records on SQLite: staff users, plans, organizations.

use super::audit;
use super::control::SqliteControlStore;
use super::{begin_write, db_error, json_col, opt_uuid_col, to_json, uuid_col};

use super::audit::ChainAt;
use crate::Role;
use crate::audit::NewAuditEntry;
use crate::ids::{OrgId, UserId};
use crate::plan::Plan;
use crate::store::{
    Organization, PageRequest, PlatformStore, PlatformUser, StoreError, StoreResult, decode,
};
use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite};

pub(super) fn platform_user_from_row(row: &SqliteRow) -> StoreResult<PlatformUser> {
    let role: String = row.try_get("role").map_err(db_error)?;
    Ok(PlatformUser {
        id: uuid_col(row, "id")?,
        email: row.try_get("email").map_err(db_error)?,
        name: row.try_get("name").map_err(db_error)?,
        password_hash: row.try_get("password_hash").map_err(db_error)?,
        role: decode(&role, Role::parse, "role")?,
        organization_id: opt_uuid_col(row, "organization_id")?,
        created_at: row.try_get("created_at").map_err(db_error)?,
    })
}

pub(super) fn org_from_row(row: &SqliteRow) -> StoreResult<Organization> {
    Ok(Organization {
        id: uuid_col(row, "id")?,
        name: row.try_get("name").map_err(db_error)?,
        description: row.try_get("description").map_err(db_error)?,
        created_at: row.try_get("created_at").map_err(db_error)?,
    })
}

pub(super) fn plan_from_row(row: &SqliteRow) -> StoreResult<Plan> {
    serde_json::from_value(json_col(row, "body")?)
        .map_err(|e| StoreError::Internal(format!("bad plan in store: {e}")))
}

#[async_trait]
impl PlatformStore for SqliteControlStore {
    async fn insert_platform_user(&self, u: &PlatformUser, a: &NewAuditEntry) -> StoreResult<()> {
        let mut tx = begin_write(&self.pool).await?;
        sqlx::query(
            "INSERT INTO platform_users (id, email, name, password_hash, role, organization_id, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(u.id.to_string())
        .bind(&u.email)
        .bind(&u.name)
        .bind(&u.password_hash)
        .bind(u.role.as_str())
        .bind(u.organization_id.map(|o| o.to_string()))
        .bind(u.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| match db_error(e) {
            StoreError::Conflict(_) => StoreError::Conflict("email".into()),
            other => other,
        })?;
        audit::append_at(&mut tx, &ChainAt::platform(), a, self.clock.now()).await?;
        tx.commit().await.map_err(db_error)
    }

    async fn platform_user_by_email(&self, email: &str) -> StoreResult<Option<PlatformUser>> {
        sqlx::query("SELECT * FROM platform_users WHERE lower(email) = lower(?)")
            .bind(email)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?
            .as_ref()
            .map(platform_user_from_row)
            .transpose()
    }

    async fn platform_user(&self, id: UserId) -> StoreResult<Option<PlatformUser>> {
        sqlx::query("SELECT * FROM platform_users WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?
            .as_ref()
            .map(platform_user_from_row)
            .transpose()
    }

    async fn count_super_admins(&self) -> StoreResult<u64> {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM platform_users WHERE role = 'super_admin'")
                .fetch_one(&self.pool)
                .await
                .map_err(db_error)?;
        Ok(n.max(0) as u64)
    }

    async fn list_plans(&self) -> StoreResult<Vec<Plan>> {
        sqlx::query("SELECT body FROM plans ORDER BY code")
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?
            .iter()
            .map(plan_from_row)
            .collect()
    }

    async fn plan(&self, code: &str) -> StoreResult<Option<Plan>> {
        sqlx::query("SELECT body FROM plans WHERE code = ?")
            .bind(code)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?
            .as_ref()
            .map(plan_from_row)
            .transpose()
    }

    async fn upsert_plan(&self, plan: &Plan, a: &NewAuditEntry) -> StoreResult<bool> {
        let mut tx = begin_write(&self.pool).await?;
        let existed: Option<i64> = sqlx::query_scalar("SELECT 1 FROM plans WHERE code = ?")
            .bind(&plan.code)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
        sqlx::query("INSERT INTO plans (code, body) VALUES (?, ?) ON CONFLICT (code) DO UPDATE SET body = excluded.body")
            .bind(&plan.code)
            .bind(to_json(plan)?)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        audit::append_at(&mut tx, &ChainAt::platform(), a, self.clock.now()).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(existed.is_none())
    }

    async fn seed_plans(&self, plans: &[Plan]) -> StoreResult<()> {
        for plan in plans {
            sqlx::query(
                "INSERT INTO plans (code, body) VALUES (?, ?) ON CONFLICT (code) DO NOTHING",
            )
            .bind(&plan.code)
            .bind(to_json(plan)?)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        }
        Ok(())
    }

    async fn insert_org(&self, org: &Organization, a: &NewAuditEntry) -> StoreResult<()> {
        let mut tx = begin_write(&self.pool).await?;
        sqlx::query(
            "INSERT INTO organizations (id, name, description, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(org.id.to_string())
        .bind(&org.name)
        .bind(&org.description)
        .bind(org.created_at)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        audit::append_at(&mut tx, &ChainAt::platform(), a, self.clock.now()).await?;
        tx.commit().await.map_err(db_error)
    }

    async fn org(&self, id: OrgId) -> StoreResult<Option<Organization>> {
        sqlx::query("SELECT * FROM organizations WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?
            .as_ref()
            .map(org_from_row)
            .transpose()
    }

    async fn list_orgs(
        &self,
        only: Option<OrgId>,
        page: &PageRequest,
    ) -> StoreResult<Vec<Organization>> {
        crate::store::listing::orgs::<Sqlite>(only, page)
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?
            .iter()
            .map(org_from_row)
            .collect()
    }
}
