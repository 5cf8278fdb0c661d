//! `/api/v1/auth`: login, registration, OTP, refresh, logout, me.

use super::Problem;
use super::client_addr::ClientAddr;
use super::extract::ApiJson;
use crate::api::scope::Authenticated;
use crate::control::identity::sessions::{
    LoginRequest, LoginResponse, Me, OtpRequest, OtpVerify, RefreshRequest, RegisterRequest,
};
use crate::error::Error;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(register))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(me))
        .routes(routes!(otp_request))
        .routes(routes!(otp_verify))
}

/// Exchanges email and password for tokens. Without `tenant`, a platform
/// user logs in. Unknown email and wrong password answer alike; repeated
/// failures answer 429 with `Retry-After`.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest, security(()),
    responses((status = 200, body = LoginResponse), (status = 401, body = Problem), (status = 429, body = Problem)))]
async fn login(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Json<LoginResponse>, Error> {
    Ok(Json(state.services.identity.login(body, addr).await?))
}

/// Self-registration as a `user`, where the tenant's `auth.self_registration` is true.
#[utoipa::path(post, path = "/api/v1/auth/register", tag = "auth", request_body = RegisterRequest, security(()),
    responses((status = 201, body = LoginResponse), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn register(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<LoginResponse>), Error> {
    Ok((
        StatusCode::CREATED,
        Json(state.services.identity.register(body).await?),
    ))
}

/// Rotates a refresh token: a new pair, the old token spent. Reusing a spent
/// token revokes every token of that login.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", request_body = RefreshRequest, security(()),
    responses((status = 200, body = LoginResponse), (status = 401, body = Problem)))]
async fn refresh(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<Json<LoginResponse>, Error> {
    Ok(Json(
        state.services.identity.refresh(&body.refresh_token).await?,
    ))
}

/// Revokes the refresh token (and its whole family).
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", request_body = RefreshRequest, security(()),
    responses((status = 204)))]
async fn logout(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<StatusCode, Error> {
    state.services.identity.logout(&body.refresh_token).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The signed-in user and tenant.
#[utoipa::path(get, path = "/api/v1/auth/me", tag = "auth",
    responses((status = 200, body = Me), (status = 401, body = Problem)))]
async fn me(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
) -> Result<Json<Me>, Error> {
    Ok(Json(state.services.identity.me(&principal).await?))
}

/// Sends a login code to the phone (tenant config `auth.otp`). Always 202,
/// whether or not the phone is registered.
#[utoipa::path(post, path = "/api/v1/auth/otp/request", tag = "auth", request_body = OtpRequest, security(()),
    responses((status = 202, body = Object), (status = 403, body = Problem)))]
async fn otp_request(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    ApiJson(body): ApiJson<OtpRequest>,
) -> Result<(StatusCode, Json<Value>), Error> {
    state.services.identity.otp_request(body, addr).await?;
    let ttl = crate::control::identity::sessions::OTP_TTL_SECS;
    Ok((StatusCode::ACCEPTED, Json(json!({"expires_in": ttl}))))
}

/// Exchanges a code for tokens; 5 wrong codes void it.
#[utoipa::path(post, path = "/api/v1/auth/otp/verify", tag = "auth", request_body = OtpVerify, security(()),
    responses((status = 200, body = LoginResponse), (status = 401, body = Problem)))]
async fn otp_verify(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<OtpVerify>,
) -> Result<Json<LoginResponse>, Error> {
    Ok(Json(state.services.identity.otp_verify(body).await?))
}
