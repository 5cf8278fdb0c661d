//! Slow clients and slow work get bounded time.
//!
//! The body is read in full (up to the body limit) before routing, so the
//! extractors — the tenant's concurrency slot among them — start only once
//! the client has sent everything: a client trickling its body holds a
//! connection, never a tenant's slot. The body and the handler then each
//! get `request_timeout`: a body not sent in time is a 408, a handler not
//! done in time a 503 with `Retry-After`. Imports stream their (large)
//! upload in the handler and are exempt. Headers are bounded by the
//! server's header-read timeout (`app::serve_router`).

use crate::error::Error;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Limited};
use std::time::Duration;

pub async fn deadline(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limit = Duration::from_millis(state.settings.request_timeout_ms.max(1));
    if is_upload(&req) {
        return next.run(req).await;
    }
    // Most requests (GETs) have no body to wait for.
    let req = if http_body::Body::is_end_stream(req.body()) {
        req
    } else {
        match read_body(req, limit, state.settings.max_body_bytes).await {
            Ok(req) => req,
            Err(refused) => return refused,
        }
    };
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(res) => res,
        Err(_) => Error::Unavailable(format!(
            "the request took longer than {} ms",
            limit.as_millis()
        ))
        .into_response(),
    }
}

/// The request with its body read in full, or the refusal to send.
async fn read_body(req: Request, limit: Duration, max_bytes: usize) -> Result<Request, Response> {
    let (parts, body) = req.into_parts();
    let limited = Limited::new(body, max_bytes);
    let bytes = match tokio::time::timeout(limit, limited.collect()).await {
        Err(_) => return Err(Error::RequestTimeout.into_response()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(Error::PayloadTooLarge.into_response());
        }
        Ok(Err(e)) => {
            return Err(Error::InvalidJson(format!("reading the body: {e}")).into_response());
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// `POST /api/v1/tenants/{id}/import`: streamed to a file by its handler.
fn is_upload(req: &Request) -> bool {
    req.method() == Method::POST
        && req
            .uri()
            .path()
            .strip_prefix("/api/v1/tenants/")
            .is_some_and(|rest| rest.ends_with("/import") && rest.matches('/').count() == 1)
}
