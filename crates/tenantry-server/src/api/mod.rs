//! The HTTP edge: one router per resource, merged here with the OpenAPI
//! document, the fallbacks and the layers every request passes through.

pub mod admin;
pub mod analytics;
pub mod audit;
pub mod auth;
pub mod client_addr;
pub mod collections;
pub mod config;
pub mod deadline;
pub mod extract;
pub mod jobs;
pub mod observe;
mod openapi;
pub mod ops;
pub mod orgs;
pub mod path;
pub mod plans;
pub mod problem;
pub mod scope;
pub mod tenants;
pub mod unread_body;
pub mod users;

use crate::error::Error;
use crate::state::AppState;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::{Router, middleware};
pub use problem::Problem;
use tenantry::TenantId;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

/// Every documented route, and the OpenAPI document describing them.
pub fn documented_routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (routes, openapi) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(ops::router())
        .merge(admin::router())
        .merge(auth::router())
        .merge(tenants::router())
        .merge(plans::router())
        .merge(orgs::router())
        .merge(config::router())
        .merge(users::router())
        .merge(collections::router())
        .merge(analytics::router())
        .merge(audit::router())
        .merge(jobs::router())
        .split_for_parts();
    (routes, openapi::finish(openapi))
}

pub fn router(state: AppState) -> Router {
    let (routes, openapi) = documented_routes();
    edge(
        routes.merge(SwaggerUi::new("/docs").url("/openapi.json", openapi)),
        state,
    )
}

/// Wraps routes in what every request passes through: problem+json
/// fallbacks, the body limit, panic recovery, deadlines and observation.
pub fn edge(routes: Router<AppState>, state: AppState) -> Router {
    let max_body = state.settings.max_body_bytes;
    routes
        .fallback(|| async { Error::NotFound("route".into()) })
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(CatchPanicLayer::custom(
            |_panic: Box<dyn std::any::Any + Send>| {
                Error::Internal("a handler panicked".into()).into_response()
            },
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            deadline::deadline,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            observe::observe,
        ))
        .with_state(state)
}

/// Marks a response as being about one tenant (`X-Tenant-ID`), which the
/// access log also picks up.
pub fn with_tenant(tenant: TenantId, res: impl IntoResponse) -> Response {
    let mut res = res.into_response();
    if let Ok(v) = HeaderValue::from_str(&tenant.to_string()) {
        res.headers_mut().insert(observe::TENANT_ID.clone(), v);
    }
    res
}
