//! `/api/v1/analytics`: comparisons across tenants for platform staff.

use super::Problem;
use super::extract::ApiQuery;
use crate::api::scope::Authenticated;
use crate::control::analytics::CompareRow;
use crate::error::Error;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(compare))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CompareQuery {
    pub collection: String,
    pub group_by: String,
    /// Comma-separated values of `group_by` that count as resolved.
    pub resolved: String,
}

/// Per-tenant `{tenant, total, resolved, resolution_rate}`, best rate first
/// (ties by slug): super-admins see every tenant, org admins their organization's.
#[utoipa::path(get, path = "/api/v1/analytics/compare", tag = "analytics", params(CompareQuery),
    responses((status = 200, body = Vec<CompareRow>), (status = 403, body = Problem)))]
async fn compare(
    State(state): State<AppState>,
    auth: Authenticated,
    ApiQuery(q): ApiQuery<CompareQuery>,
) -> Result<Json<Vec<CompareRow>>, Error> {
    let actor = auth.require_platform()?;
    let resolved: Vec<String> = q
        .resolved
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    Ok(Json(
        state
            .services
            .analytics
            .compare(actor, &q.collection, &q.group_by, &resolved)
            .await?,
    ))
}
