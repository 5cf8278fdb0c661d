//! The audit log: read and verify, never edit. Tenant-scoped for a tenant's
//! admins, per tenant for platform staff, and the platform's own chain.

use super::Problem;
use super::extract::{ApiQuery, Page, PageParams};
use crate::api::scope::{Authenticated, TenantScope};
use crate::control::tenants::audit::{AuditPage, Verification};
use crate::error::Error;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use tenantry::audit::{AuditEntry, AuditFilter};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(own_audit))
        .routes(routes!(tenant_audit))
        .routes(routes!(verify_audit))
        .routes(routes!(platform_audit))
}

/// Filters and paging of an audit listing (oldest first; a tenant's two
/// chains merged in time order).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// The acting user's id (or, for failed logins, the name that was tried).
    pub actor: Option<String>,
    /// e.g. `record.create`, `login.failure`.
    pub action: Option<String>,
    /// RFC 3339 time: entries at or after it.
    #[param(format = DateTime)]
    pub since: Option<String>,
    #[param(value_type = Option<i64>, minimum = 0, maximum = 4294967295.0)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

impl AuditQuery {
    /// The filter, and the page's size (clamped like every list) and cursor.
    fn split(self) -> Result<(AuditFilter, u32, Option<String>), Error> {
        let since = match self.since.as_deref() {
            None => None,
            Some(s) => Some(
                DateTime::parse_from_rfc3339(s)
                    .map_err(|_| Error::invalid("since", "must be an RFC 3339 time"))?
                    .with_timezone(&Utc),
            ),
        };
        let filter = AuditFilter {
            actor: self.actor,
            action: self.action,
            since,
        };
        let limit = PageParams {
            limit: self.limit,
            cursor: None,
        }
        .limit();
        Ok((filter, limit, self.cursor))
    }
}

impl From<AuditPage> for Page<AuditEntry> {
    fn from(p: AuditPage) -> Self {
        Page {
            items: p.items,
            next_cursor: p.next_cursor,
        }
    }
}

/// The caller's tenant's audit log (the tenant's admins).
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = Page<AuditEntry>), (status = 403, body = Problem)))]
async fn own_audit(
    State(state): State<AppState>,
    scope: TenantScope,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Page<AuditEntry>>, Error> {
    let (filter, limit, cursor) = q.split()?;
    let page = state
        .services
        .tenants
        .own_audit(&scope.acting(), &filter, cursor.as_deref(), limit)
        .await?;
    Ok(Json(page.into()))
}

/// A tenant's audit log (super-admin; org admin for its organization's tenants).
#[utoipa::path(get, path = "/api/v1/tenants/{id}/audit", tag = "audit",
    params(("id" = String, Path, description = "tenant id or slug"), AuditQuery),
    responses((status = 200, body = Page<AuditEntry>), (status = 404, body = Problem)))]
async fn tenant_audit(
    State(state): State<AppState>,
    Authenticated(actor): Authenticated,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Page<AuditEntry>>, Error> {
    let (filter, limit, cursor) = q.split()?;
    let page = state
        .services
        .tenants
        .tenant_audit(&actor, &id, &filter, cursor.as_deref(), limit)
        .await?;
    Ok(Json(page.into()))
}

/// Checks every link of the tenant's audit chains.
#[utoipa::path(get, path = "/api/v1/tenants/{id}/audit/verify", tag = "audit",
    params(("id" = String, Path, description = "tenant id or slug")),
    responses((status = 200, body = Verification), (status = 404, body = Problem)))]
async fn verify_audit(
    State(state): State<AppState>,
    Authenticated(actor): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Verification>, Error> {
    Ok(Json(
        state.services.tenants.verify_audit(&actor, &id).await?,
    ))
}

/// Platform events with no tenant: plans, organizations, platform users and logins (super-admin).
#[utoipa::path(get, path = "/api/v1/platform/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = Page<AuditEntry>), (status = 403, body = Problem)))]
async fn platform_audit(
    State(state): State<AppState>,
    Authenticated(actor): Authenticated,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Page<AuditEntry>>, Error> {
    let (filter, limit, cursor) = q.split()?;
    let page = state
        .services
        .tenants
        .platform_audit(&actor, &filter, cursor.as_deref(), limit)
        .await?;
    Ok(Json(page.into()))
}
