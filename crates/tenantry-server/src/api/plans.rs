//! `/api/v1/plans`: the plan catalogue.

use super::Problem;
use super::extract::{ApiJson, Page};
use crate::api::scope::Authenticated;
use crate::control::tenants::plans::PlanBody;
use crate::error::Error;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use tenantry::Plan;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_plans))
        .routes(routes!(get_plan, put_plan))
}

/// Every plan, with limits, features and configuration defaults.
#[utoipa::path(get, path = "/api/v1/plans", tag = "plans", responses((status = 200, body = Page<Plan>)))]
async fn list_plans(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Json<Page<Plan>>, Error> {
    auth.require_platform()?;
    let items = state.services.core.list_plans().await?;
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

/// One plan.
#[utoipa::path(get, path = "/api/v1/plans/{code}", tag = "plans",
    params(("code" = String, Path)), responses((status = 200, body = Plan), (status = 404, body = Problem)))]
async fn get_plan(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(code): Path<String>,
) -> Result<Json<Plan>, Error> {
    auth.require_platform()?;
    Ok(Json(Plan::clone(&*state.services.core.plan(&code).await?)))
}

/// Replaces a plan, or adds it when the code is new (super-admin).
#[utoipa::path(put, path = "/api/v1/plans/{code}", tag = "plans", request_body = PlanBody,
    params(("code" = String, Path)), responses((status = 200, body = Plan), (status = 422, body = Problem)))]
async fn put_plan(
    State(state): State<AppState>,
    Authenticated(actor): Authenticated,
    Path(code): Path<String>,
    ApiJson(body): ApiJson<PlanBody>,
) -> Result<(StatusCode, Json<Plan>), Error> {
    let (plan, _created) = state.services.tenants.put_plan(&actor, &code, body).await?;
    Ok((StatusCode::OK, Json(plan)))
}
