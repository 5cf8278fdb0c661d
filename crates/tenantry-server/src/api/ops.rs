//! Operational endpoints: liveness, readiness, Prometheus metrics.

use crate::error::Error;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics_text))
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()), responses((status = 200, description = "up")))]
async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// The control store answers.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses((status = 200, description = "ready"), (status = 503, body = crate::api::problem::Problem)))]
async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, Error> {
    state.services.core.store.ping().await?;
    Ok(Json(json!({"status": "ready"})))
}

/// Prometheus text exposition (behind `metrics_token` when one is set).
#[utoipa::path(get, path = "/metrics", tag = "operations", security((), ("bearer" = [])),
    responses((status = 200, content_type = "text/plain"), (status = 401, body = crate::api::problem::Problem)))]
async fn metrics_text(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, Error> {
    if let Some(token) = crate::settings::exposed(&state.settings.metrics_token) {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        // Compared by digest: equal-length values, no early exit on the secret.
        let digest = |s: &str| Sha256::digest(s.as_bytes());
        if digest(presented) != digest(token) {
            return Err(Error::Unauthorized);
        }
    }
    let mut text = state.metrics.render();
    text.push_str(&crate::monitor::tenant_series::render(
        &state.traffic,
        state.settings.metrics_top_tenants,
    ));
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text))
}
