//! `/api/v1/organizations`.

use super::Problem;
use super::extract::{ApiJson, ApiQuery, Page, PageParams};
use crate::api::scope::Authenticated;
use crate::control::identity::admins::NewOrgAdmin;
use crate::control::identity::users::UserView;
use crate::control::tenants::orgs::NewOrganization;
use crate::error::Error;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use tenantry::Tenant;
use tenantry::store::Organization;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_org, list_orgs))
        .routes(routes!(get_org))
        .routes(routes!(org_tenants))
        .routes(routes!(create_org_admin))
}

/// Creates an organization (super-admin).
#[utoipa::path(post, path = "/api/v1/organizations", tag = "organizations", request_body = NewOrganization,
    responses((status = 201, body = Organization), (status = 422, body = Problem)))]
async fn create_org(
    State(state): State<AppState>,
    Authenticated(actor): Authenticated,
    ApiJson(body): ApiJson<NewOrganization>,
) -> Result<(StatusCode, Json<Organization>), Error> {
    Ok((
        StatusCode::CREATED,
        Json(state.services.tenants.create_org(&actor, body).await?),
    ))
}

/// Organizations the caller may see.
#[utoipa::path(get, path = "/api/v1/organizations", tag = "organizations", params(PageParams),
    responses((status = 200, body = Page<Organization>)))]
async fn list_orgs(
    State(state): State<AppState>,
    Authenticated(actor): Authenticated,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<Json<Page<Organization>>, Error> {
    let rows = state
        .services
        .tenants
        .list_orgs(&actor, &page.request()?)
        .await?;
    Ok(Json(Page::from_rows(rows, &page, |o| o.id.0)))
}

/// One organization.
#[utoipa::path(get, path = "/api/v1/organizations/{id}", tag = "organizations", params(("id" = String, Path)),
    responses((status = 200, body = Organization), (status = 404, body = Problem)))]
async fn get_org(
    State(state): State<AppState>,
    Authenticated(actor): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Organization>, Error> {
    Ok(Json(state.services.core.org(&actor, &id).await?))
}

/// The organization's tenants.
#[utoipa::path(get, path = "/api/v1/organizations/{id}/tenants", tag = "organizations",
    params(("id" = String, Path), PageParams),
    responses((status = 200, body = Page<Tenant>), (status = 404, body = Problem)))]
async fn org_tenants(
    State(state): State<AppState>,
    Authenticated(actor): Authenticated,
    Path(id): Path<String>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<Json<Page<Tenant>>, Error> {
    let rows = state
        .services
        .tenants
        .org_tenants(&actor, &id, &page.request()?)
        .await?
        .into_iter()
        .map(|t| super::tenants::shown_to(&actor, t))
        .collect();
    Ok(Json(Page::from_rows(rows, &page, |t| t.id.0)))
}

/// Adds an organization admin, who may then act in any tenant of the
/// organization by naming it (super-admin).
#[utoipa::path(post, path = "/api/v1/organizations/{id}/admins", tag = "organizations", request_body = NewOrgAdmin,
    params(("id" = String, Path)),
    responses((status = 201, body = UserView), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn create_org_admin(
    State(state): State<AppState>,
    Authenticated(actor): Authenticated,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<NewOrgAdmin>,
) -> Result<(StatusCode, Json<UserView>), Error> {
    Ok((
        StatusCode::CREATED,
        Json(
            state
                .services
                .identity
                .create_org_admin(&actor, &id, body)
                .await?,
        ),
    ))
}
