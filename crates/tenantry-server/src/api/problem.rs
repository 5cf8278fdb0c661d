//! The HTTP edge of errors: every failure becomes RFC 9457 problem+json here,
//! and only here. 5xx bodies carry a generic text; the real cause travels in a
//! response extension to the access log, which logs it exactly once.

use crate::error::{Error, FieldError};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The media type of every error body.
pub const MEDIA_TYPE: &str = "application/problem+json";

/// An RFC 9457 problem document.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable snake_case identifier of the error.
    pub code: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// The hidden cause of a 5xx, for the access log.
#[derive(Clone, Debug)]
pub struct InternalCause(pub String);

impl Error {
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        use StatusCode as S;
        match self {
            Error::Unauthorized => (S::UNAUTHORIZED, "unauthorized"),
            Error::Forbidden(_) => (S::FORBIDDEN, "forbidden"),
            Error::TenantRequired => (S::BAD_REQUEST, "tenant_required"),
            Error::TenantNotFound => (S::NOT_FOUND, "tenant_not_found"),
            Error::TenantMismatch => (S::FORBIDDEN, "tenant_mismatch"),
            Error::TenantSuspended => (S::FORBIDDEN, "tenant_suspended"),
            Error::FeatureNotEnabled(_) => (S::FORBIDDEN, "feature_not_enabled"),
            Error::QuotaExceeded(_) => (S::FORBIDDEN, "quota_exceeded"),
            Error::NotFound(_) => (S::NOT_FOUND, "not_found"),
            Error::Conflict(_) => (S::CONFLICT, "conflict"),
            Error::PreconditionFailed => (S::PRECONDITION_FAILED, "precondition_failed"),
            Error::Validation(_) => (S::UNPROCESSABLE_ENTITY, "validation_failed"),
            Error::InvalidJson(_) => (S::BAD_REQUEST, "invalid_json"),
            Error::PayloadTooLarge => (S::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Error::MethodNotAllowed => (S::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Error::RequestTimeout => (S::REQUEST_TIMEOUT, "request_timeout"),
            Error::RateLimited { .. } => (S::TOO_MANY_REQUESTS, "rate_limited"),
            Error::Unavailable(_) | Error::Sealed => (S::SERVICE_UNAVAILABLE, "unavailable"),
            Error::Absent => (S::NOT_FOUND, "tenant_not_found"),
            Error::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }
}

pub fn problem_response(
    status: StatusCode,
    code: &str,
    detail: String,
    errors: Vec<FieldError>,
) -> Response {
    let title = status.canonical_reason().unwrap_or("Error").to_owned();
    let body = Problem {
        type_: format!("https://tenantry.dev/problems/{code}"),
        title,
        status: status.as_u16(),
        detail,
        code: code.to_owned(),
        errors,
    };
    let mut res = (status, axum::Json(body)).into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE));
    res
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let cause = match &self {
            Error::Internal(msg) | Error::Unavailable(msg) => Some(msg.clone()),
            _ => None,
        };
        let detail = if status.is_server_error() {
            // Never the cause: it may name SQL, paths or other internals.
            match status {
                StatusCode::SERVICE_UNAVAILABLE => {
                    "the service is temporarily unavailable; retry later".to_owned()
                }
                _ => "an internal error occurred".to_owned(),
            }
        } else {
            self.to_string()
        };
        let retry_after = match &self {
            Error::RateLimited { retry_after_secs } => Some(retry_after_secs.max(&1).to_string()),
            Error::Unavailable(_) | Error::Sealed => Some("1".to_owned()),
            _ => None,
        };
        let errors = match self {
            Error::Validation(errors) => errors,
            _ => Vec::new(),
        };
        let mut res = problem_response(status, code, detail, errors);
        if let Some(secs) = retry_after.and_then(|s| HeaderValue::from_str(&s).ok()) {
            res.headers_mut().insert(header::RETRY_AFTER, secs);
        }
        if let Some(cause) = cause {
            res.extensions_mut().insert(InternalCause(cause));
        }
        res
    }
}
