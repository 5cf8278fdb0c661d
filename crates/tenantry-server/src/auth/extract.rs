//! The `Authenticated` extractor: a verified bearer token, or 401.

use crate::app::AppState;
use crate::error::Error;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use tenantry::{Principal, Role};

/// The caller proven by the request's bearer token.
#[derive(Clone, Debug)]
pub struct Authenticated(pub Principal);

impl Authenticated {
    /// Only super-admins pass.
    pub fn require_super_admin(&self) -> Result<&Principal, Error> {
        match self.0.role {
            Role::SuperAdmin => Ok(&self.0),
            _ => Err(Error::Forbidden("super-admin only".into())),
        }
    }

    /// Super-admins and organization admins pass.
    pub fn require_platform(&self) -> Result<&Principal, Error> {
        if self.0.role.is_platform() {
            Ok(&self.0)
        } else {
            Err(Error::Forbidden("platform staff only".into()))
        }
    }
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or(Error::Unauthorized)?;
        state
            .services
            .tokens
            .verify(token.trim())
            .map(Authenticated)
    }
}
