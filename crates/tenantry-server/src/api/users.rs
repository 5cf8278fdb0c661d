//! `/api/v1/users`: users of the request's tenant.

use super::Problem;
use super::extract::{ApiJson, ApiQuery, Page, PageParams};
use super::path::IdPath;
use crate::api::scope::TenantScope;
use crate::control::identity::users::{NewUser, UserPatch, UserView};
use crate::error::Error;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use tenantry::UserId;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_user, list_users))
        .routes(routes!(get_user, patch_user, delete_user))
}

/// Adds a user (admin; a manager may add `user`s). Past the plan's
/// `max_users`: 403 `quota_exceeded`.
#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = NewUser,
    responses((status = 201, body = UserView), (status = 403, body = Problem), (status = 409, body = Problem),
              (status = 422, body = Problem)))]
async fn create_user(
    State(state): State<AppState>,
    scope: TenantScope,
    ApiJson(body): ApiJson<NewUser>,
) -> Result<(StatusCode, Json<UserView>), Error> {
    Ok((
        StatusCode::CREATED,
        Json(
            state
                .services
                .identity
                .create_user(&scope.acting(), body)
                .await?,
        ),
    ))
}

/// The tenant's users (not for role `user`).
#[utoipa::path(get, path = "/api/v1/users", tag = "users", params(PageParams),
    responses((status = 200, body = Page<UserView>), (status = 403, body = Problem)))]
async fn list_users(
    State(state): State<AppState>,
    scope: TenantScope,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<Json<Page<UserView>>, Error> {
    let rows = state
        .services
        .identity
        .list_users(&scope.acting(), &page.request()?)
        .await?;
    Ok(Json(Page::from_rows(rows, &page, |u| u.id.0)))
}

/// One user of the tenant; another tenant's user id is 404.
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users", params(("id" = String, Path)),
    responses((status = 200, body = UserView), (status = 404, body = Problem)))]
async fn get_user(
    State(state): State<AppState>,
    scope: TenantScope,
    IdPath(id): IdPath<UserId>,
) -> Result<Json<UserView>, Error> {
    Ok(Json(
        state
            .services
            .identity
            .get_user(&scope.acting(), id)
            .await?,
    ))
}

/// Changes name, role, password or `active`. Everyone may change their own
/// name and password; the password must meet the tenant's policy.
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "users", request_body = UserPatch, params(("id" = String, Path)),
    responses((status = 200, body = UserView), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 422, body = Problem)))]
async fn patch_user(
    State(state): State<AppState>,
    scope: TenantScope,
    IdPath(id): IdPath<UserId>,
    ApiJson(patch): ApiJson<UserPatch>,
) -> Result<Json<UserView>, Error> {
    Ok(Json(
        state
            .services
            .identity
            .update_user(&scope.acting(), id, patch)
            .await?,
    ))
}

/// Removes a user and revokes its refresh tokens.
#[utoipa::path(delete, path = "/api/v1/users/{id}", tag = "users", params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn delete_user(
    State(state): State<AppState>,
    scope: TenantScope,
    IdPath(id): IdPath<UserId>,
) -> Result<StatusCode, Error> {
    state
        .services
        .identity
        .delete_user(&scope.acting(), id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
