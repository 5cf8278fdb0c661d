//! `/api/v1/tenants`: the tenant lifecycle.

use super::extract::{ApiJson, ApiQuery, Page, PageParams};
use super::{Problem, with_tenant};
use crate::api::scope::Authenticated;
use crate::control::tenants::{NewTenant, TenantPatch};
use crate::error::{Error, Validator};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tenantry::store::TenantFilter;
use tenantry::{Principal, Role, Tenant, TenantStatus};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_tenant, list_tenants))
        .routes(routes!(get_tenant, patch_tenant, delete_tenant))
        .routes(routes!(suspend_tenant))
        .routes(routes!(activate_tenant))
        .routes(routes!(change_plan))
        .routes(routes!(usage))
        .routes(routes!(health))
}

/// Filters and paging of the tenant list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TenantQuery {
    /// `active`, `suspended`, `deleting` or `deleted`; all but deleted when absent.
    #[param(pattern = "^(active|suspended|deleting|deleted)$")]
    pub status: Option<String>,
    pub plan: Option<String>,
    #[param(format = Uuid)]
    pub organization_id: Option<String>,
    /// Case-insensitive search in name and slug.
    pub q: Option<String>,
    #[param(value_type = Option<i64>, minimum = 0, maximum = 4294967295.0)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// Body of `POST /api/v1/tenants/{id}/plan`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanChange {
    pub plan: String,
}

/// Creates a tenant, usable as soon as this answers 201.
#[utoipa::path(post, path = "/api/v1/tenants", tag = "tenants", request_body = NewTenant,
    responses((status = 201, body = Tenant), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn create_tenant(
    State(state): State<AppState>,
    Authenticated(actor): Authenticated,
    ApiJson(body): ApiJson<NewTenant>,
) -> Result<Response, Error> {
    let tenant = state.services.tenants.create_tenant(&actor, body).await?;
    Ok(with_tenant(
        tenant.id,
        (StatusCode::CREATED, Json(shown_to(&actor, tenant))),
    ))
}

/// Lists tenants (an org admin sees its organization's only).
#[utoipa::path(get, path = "/api/v1/tenants", tag = "tenants", params(TenantQuery),
    responses((status = 200, body = Page<Tenant>)))]
async fn list_tenants(
    State(state): State<AppState>,
    Authenticated(actor): Authenticated,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> Result<Json<Page<Tenant>>, Error> {
    let mut v = Validator::default();
    let status = q.status.as_deref().and_then(|s| {
        let parsed = TenantStatus::parse(s);
        v.check(
            parsed.is_some(),
            "status",
            "must be active, suspended, deleting or deleted",
        );
        parsed
    });
    let organization_id = q.organization_id.as_deref().and_then(|o| {
        let parsed = o.parse().ok();
        v.check(parsed.is_some(), "organization_id", "must be a UUID");
        parsed
    });
    v.finish()?;
    let page = PageParams {
        limit: q.limit,
        cursor: q.cursor,
    };
    let filter = TenantFilter {
        status,
        plan: q.plan,
        organization_id,
        q: q.q,
    };
    let rows = state
        .services
        .core
        .list_tenants(&actor, filter, &page.request()?)
        .await?;
    let rows = rows.into_iter().map(|t| shown_to(&actor, t)).collect();
    Ok(Json(Page::from_rows(rows, &page, |t| t.id.0)))
}

/// One tenant, by id or slug.
#[utoipa::path(get, path = "/api/v1/tenants/{id}", tag = "tenants",
    params(("id" = String, Path, description = "tenant id or slug")),
    responses((status = 200, body = Tenant), (status = 404, body = Problem)))]
async fn get_tenant(
    State(state): State<AppState>,
    Authenticated(actor): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    let tenant = state.services.core.administered_tenant(&actor, &id).await?;
    Ok(with_tenant(tenant.id, Json(shown_to(&actor, tenant))))
}

/// Changes name, slug, domain, metadata, branding or plan.
#[utoipa::path(patch, path = "/api/v1/tenants/{id}", tag = "tenants", request_body = TenantPatch,
    params(("id" = String, Path, description = "tenant id or slug")),
    responses((status = 200, body = Tenant), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn patch_tenant(
    State(state): State<AppState>,
    Authenticated(actor): Authenticated,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<TenantPatch>,
) -> Result<Response, Error> {
    let tenant = state
        .services
        .tenants
        .update_tenant(&actor, &id, patch)
        .await?;
    Ok(with_tenant(tenant.id, Json(shown_to(&actor, tenant))))
}

/// Deletes the tenant: from this answer on it is unknown to every
/// tenant-scoped route and its slug may be reused; its data, keys and files
/// are purged by a job (`Job-Id` header) that this waits for up to
/// `DELETE_WAIT`, and that is retried until it has succeeded.
#[utoipa::path(delete, path = "/api/v1/tenants/{id}", tag = "tenants",
    params(("id" = String, Path, description = "tenant id or slug")),
    responses((status = 204, headers(("job-id" = String, description = "the purge job"))),
              (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn delete_tenant(
    State(state): State<AppState>,
    Authenticated(actor): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    let job = state.services.tenants.delete_tenant(&actor, &id).await?;
    state
        .services
        .tenants
        .wait_for_job(job, DELETE_WAIT)
        .await?;
    let mut res = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = axum::http::HeaderValue::from_str(&job.to_string()) {
        res.headers_mut().insert("job-id", v);
    }
    Ok(res)
}

/// How long `DELETE /tenants/{id}` waits for its purge (usually well under
/// a second); past it the purge goes on in the background.
const DELETE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

async fn set_status(
    state: AppState,
    actor: &tenantry::Principal,
    id: &str,
    status: TenantStatus,
) -> Result<Response, Error> {
    let tenant = state
        .services
        .tenants
        .set_tenant_status(actor, id, status)
        .await?;
    Ok(with_tenant(tenant.id, Json(shown_to(actor, tenant))))
}

/// Suspends the tenant: its data plane answers 403 `tenant_suspended`.
#[utoipa::path(post, path = "/api/v1/tenants/{id}/suspend", tag = "tenants",
    params(("id" = String, Path, description = "tenant id or slug")),
    responses((status = 200, body = Tenant), (status = 404, body = Problem)))]
async fn suspend_tenant(
    State(state): State<AppState>,
    Authenticated(actor): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    set_status(state, &actor, &id, TenantStatus::Suspended).await
}

/// Re-activates a suspended tenant.
#[utoipa::path(post, path = "/api/v1/tenants/{id}/activate", tag = "tenants",
    params(("id" = String, Path, description = "tenant id or slug")),
    responses((status = 200, body = Tenant), (status = 404, body = Problem)))]
async fn activate_tenant(
    State(state): State<AppState>,
    Authenticated(actor): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    set_status(state, &actor, &id, TenantStatus::Active).await
}

/// Moves the tenant to another plan: 200 with the tenant, or 202 `{job_id}`
/// when the new plan's `default_isolation` moves its data (online).
#[utoipa::path(post, path = "/api/v1/tenants/{id}/plan", tag = "tenants", request_body = PlanChange,
    params(("id" = String, Path, description = "tenant id or slug")),
    responses((status = 200, body = Tenant), (status = 202, body = crate::control::tenants::jobs::JobAccepted),
              (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn change_plan(
    State(state): State<AppState>,
    Authenticated(actor): Authenticated,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PlanChange>,
) -> Result<Response, Error> {
    let (tenant, job) = state
        .services
        .tenants
        .set_tenant_plan(&actor, &id, body.plan)
        .await?;
    match job {
        Some(job) => Ok(super::jobs::accepted(&job)),
        None => Ok(with_tenant(tenant.id, Json(shown_to(&actor, tenant)))),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// `<n>d`, 1 to 366 days ending today (UTC); default `30d`.
    #[param(pattern = "^([1-9]|[1-9][0-9]|[12][0-9][0-9]|3[0-5][0-9]|36[0-6])d$")]
    pub range: Option<String>,
}

/// Users, records, storage bytes and requests per day beside the plan's limits.
#[utoipa::path(get, path = "/api/v1/tenants/{id}/usage", tag = "tenants",
    params(("id" = String, Path, description = "tenant id or slug"), UsageQuery),
    responses((status = 200, body = crate::control::analytics::UsageReport), (status = 404, body = Problem)))]
async fn usage(
    State(state): State<AppState>,
    Authenticated(actor): Authenticated,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> Result<Response, Error> {
    let days = match q.range.as_deref() {
        None => 30,
        Some(r) => r
            .strip_suffix('d')
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|n| (1..=366).contains(n))
            .ok_or_else(|| {
                Error::invalid("range", "must be <n>d with n from 1 to 366, e.g. 30d")
            })?,
    };
    Ok(Json(state.services.analytics.usage(&actor, &id, days).await?).into_response())
}

/// Whether the tenant's database answers, and its last five minutes of
/// traffic: request count, 5xx share, latency percentiles.
#[utoipa::path(get, path = "/api/v1/tenants/{id}/health", tag = "tenants",
    params(("id" = String, Path, description = "tenant id or slug")),
    responses((status = 200, body = crate::monitor::health::TenantHealth), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn health(
    State(state): State<AppState>,
    Authenticated(actor): Authenticated,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    // Exactly the usage route's rule: staff over the tenant only.
    let tenant = state.services.core.administered_tenant(&actor, &id).await?;
    let report = crate::monitor::health::check(&state.services, &state.traffic, &tenant).await;
    Ok(Json(report).into_response())
}

/// Where a tenant's data lives is an operator's concern: super-admins see
/// the placement, organization admins do not.
pub(super) fn shown_to(actor: &Principal, mut tenant: Tenant) -> Tenant {
    if actor.role != Role::SuperAdmin {
        tenant.placement = None;
    }
    tenant
}
