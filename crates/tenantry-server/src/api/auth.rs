//! `/api/v1/auth`: login.

use super::Problem;
use super::extract::ApiJson;
use crate::app::AppState;
use crate::control::admins::{LoginRequest, LoginResponse};
use crate::error::Error;
use axum::Json;
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(login))
}

/// Exchanges email and password for an access token. Without `tenant`, a
/// platform user logs in. Unknown email and wrong password answer alike.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 401, body = Problem)))]
async fn login(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Json<LoginResponse>, Error> {
    Ok(Json(state.services.login(body).await?))
}
