//! Per-tenant configuration, branding and features.

use super::Problem;
use super::extract::{ApiJson, ApiQuery};
use crate::api::scope::Authenticated;
use crate::control::tenants::config::{ConfigView, PutConfig};
use crate::error::Error;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_config))
        .routes(routes!(get_config, put_config, delete_config))
        .routes(routes!(get_branding, put_branding))
        .routes(routes!(features))
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConfigQuery {
    /// Merge the plan's defaults under the tenant's overrides.
    #[serde(default)]
    pub effective: bool,
    /// Decrypt encrypted values (super-admin only).
    #[serde(default)]
    pub reveal: bool,
}

/// The tenant's configuration as `{key: value}`; encrypted values show as `"***"`.
#[utoipa::path(get, path = "/api/v1/tenants/{id}/config", tag = "config",
    params(("id" = String, Path, description = "tenant id or slug"), ConfigQuery),
    responses((status = 200, body = Object), (status = 404, body = Problem)))]
async fn list_config(
    State(state): State<AppState>,
    Authenticated(actor): Authenticated,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ConfigQuery>,
) -> Result<Json<BTreeMap<String, Value>>, Error> {
    Ok(Json(
        state
            .services
            .tenants
            .list_config(&actor, &id, q.effective, q.reveal)
            .await?,
    ))
}

/// One configuration override.
#[utoipa::path(get, path = "/api/v1/tenants/{id}/config/{key}", tag = "config",
    params(("id" = String, Path), ("key" = String, Path), ConfigQuery),
    responses((status = 200, body = ConfigView), (status = 404, body = Problem)))]
async fn get_config(
    State(state): State<AppState>,
    Authenticated(actor): Authenticated,
    Path((id, key)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<ConfigQuery>,
) -> Result<Json<ConfigView>, Error> {
    Ok(Json(
        state
            .services
            .tenants
            .get_config(&actor, &id, &key, q.reveal)
            .await?,
    ))
}

/// Sets one key, optionally encrypted at rest under the tenant's key.
#[utoipa::path(put, path = "/api/v1/tenants/{id}/config/{key}", tag = "config", request_body = PutConfig,
    params(("id" = String, Path), ("key" = String, Path)),
    responses((status = 200, body = ConfigView), (status = 422, body = Problem)))]
async fn put_config(
    State(state): State<AppState>,
    Authenticated(actor): Authenticated,
    Path((id, key)): Path<(String, String)>,
    ApiJson(body): ApiJson<PutConfig>,
) -> Result<Json<ConfigView>, Error> {
    Ok(Json(
        state
            .services
            .tenants
            .put_config(&actor, &id, &key, body)
            .await?,
    ))
}

/// Removes an override; the plan default applies again.
#[utoipa::path(delete, path = "/api/v1/tenants/{id}/config/{key}", tag = "config",
    params(("id" = String, Path), ("key" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)))]
async fn delete_config(
    State(state): State<AppState>,
    Authenticated(actor): Authenticated,
    Path((id, key)): Path<(String, String)>,
) -> Result<StatusCode, Error> {
    state
        .services
        .tenants
        .delete_config(&actor, &id, &key)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The tenant's branding. Public: login pages need it before sign-in.
#[utoipa::path(get, path = "/api/v1/tenants/{id}/branding", tag = "config", security(()),
    params(("id" = String, Path, description = "tenant id or slug")),
    responses((status = 200, body = Object), (status = 404, body = Problem)))]
async fn get_branding(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, Error> {
    Ok(Json(state.services.tenants.branding(&id).await?))
}

/// Replaces the branding; needs the plan feature `custom_branding`.
#[utoipa::path(put, path = "/api/v1/tenants/{id}/branding", tag = "config", request_body = Object,
    params(("id" = String, Path, description = "tenant id or slug")),
    responses((status = 200, body = Object), (status = 403, body = Problem)))]
async fn put_branding(
    State(state): State<AppState>,
    Authenticated(actor): Authenticated,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<Value>, Error> {
    Ok(Json(
        state
            .services
            .tenants
            .put_branding(&actor, &id, body)
            .await?,
    ))
}

/// Effective feature flags: `{name: bool}`.
#[utoipa::path(get, path = "/api/v1/tenants/{id}/features", tag = "config",
    params(("id" = String, Path, description = "tenant id or slug")),
    responses((status = 200, body = Object), (status = 404, body = Problem)))]
async fn features(
    State(state): State<AppState>,
    Authenticated(actor): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<BTreeMap<String, bool>>, Error> {
    Ok(Json(state.services.tenants.features(&actor, &id).await?))
}
