//! Who a request is and where it acts: `Authenticated` (a verified token of
//! a user who still exists) and `TenantScope` (that, plus the one tenant
//! the request was resolved to and admitted into). The work of both is the
//! services' (`control::admission`); these only read the request.

use crate::control::admission::Admitted;
use crate::enforce::rate_limit::RateSlot;
use crate::error::Error;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use std::sync::Arc;
use tenantry::resolve::{ResolveError, ResolvedTenant};
use tenantry::{Acting, Principal, Tenant};

/// The caller proven by the request's bearer token.
#[derive(Clone, Debug)]
pub struct Authenticated(pub Principal);

impl Authenticated {
    /// Super-admins and organization admins pass.
    pub fn require_platform(&self) -> Result<&Principal, Error> {
        crate::control::actor_is_platform(&self.0).map(|()| &self.0)
    }
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(principal) = parts.extensions.get::<Principal>() {
            return Ok(Authenticated(principal.clone()));
        }
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or(Error::Unauthorized)?;
        let principal = state.services.identity.authenticate(token.trim()).await?;
        // The tenant resolver reads the principal from here.
        parts.extensions.insert(principal.clone());
        Ok(Authenticated(principal))
    }
}

/// An authenticated principal acting inside one resolved, admitted tenant.
#[derive(Clone, Debug)]
pub struct TenantScope {
    pub principal: Principal,
    pub tenant: Tenant,
    /// The tenant's in-flight slot, released when the handler drops the scope.
    _admitted: Arc<Admitted>,
}

impl TenantScope {
    pub fn acting(&self) -> Acting {
        Acting {
            principal: self.principal.clone(),
            tenant: self.tenant.clone(),
        }
    }
}

impl FromRequestParts<AppState> for TenantScope {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Authenticated(principal) = Authenticated::from_request_parts(parts, state).await?;
        let resolution = match ResolvedTenant::from_request_parts(parts, state).await {
            Ok(ResolvedTenant(resolution)) => resolution,
            Err(e) => {
                if let ResolveError::CrossTenant(target)
                | ResolveError::OutsideOrganization(target) = &e
                {
                    state
                        .services
                        .core
                        .audit_cross_tenant(
                            &principal,
                            target,
                            parts.method.as_str(),
                            parts.uri.path(),
                        )
                        .await?;
                }
                return Err(e.into());
            }
        };
        tracing::Span::current().record("tenant_id", resolution.tenant.id.to_string());
        tracing::debug!(plan = %resolution.tenant.plan, staff = resolution.cross_tenant, "tenant resolved");
        let slot = parts.extensions.get::<RateSlot>();
        let admitted = state
            .services
            .admission
            .admit(
                &principal,
                &resolution,
                parts.method.as_str(),
                parts.uri.path(),
                |info| {
                    if let Some(slot) = slot {
                        let _ = slot.0.set(info);
                    }
                },
            )
            .await?;
        Ok(TenantScope {
            principal,
            tenant: resolution.tenant,
            _admitted: Arc::new(admitted),
        })
    }
}
