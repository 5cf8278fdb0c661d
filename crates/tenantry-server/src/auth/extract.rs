//! Extractors: `Authenticated` (a verified token of a user who still exists)
//! and `TenantScope` (that plus the one tenant the request acts in).

use crate::app::AppState;
use crate::control::users::Acting;
use crate::enforce::rate_limit::RateSlot;
use crate::error::Error;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use std::sync::Arc;
use tenantry::resolve::{ResolveError, ResolvedTenant};
use tenantry::{Principal, Tenant};
use tokio::sync::OwnedSemaphorePermit;

/// The caller proven by the request's bearer token.
#[derive(Clone, Debug)]
pub struct Authenticated(pub Principal);

impl Authenticated {
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
        let services = &state.services;
        let principal = services.tokens.verify(token.trim())?;
        // A valid signature is not enough: the user (and its tenant) must still exist.
        let key = (principal.tenant_id, principal.user_id);
        let role = services
            .caches
            .users
            .get_or_try_insert_with(&key, async {
                Ok::<_, Error>(match principal.tenant_id {
                    None => services
                        .store
                        .platform_user(principal.user_id)
                        .await?
                        .map(|u| u.role),
                    Some(tid) => match services.resolver.find(&tid.to_string()).await? {
                        None => None,
                        Some(tenant) => services
                            .store
                            .user(&tenant, principal.user_id)
                            .await?
                            .filter(|u| u.active)
                            .map(|u| u.role),
                    },
                })
            })
            .await?;
        let exists = role == Some(principal.role);
        if !exists {
            return Err(Error::Unauthorized);
        }
        // The tenant resolver reads the principal from here.
        parts.extensions.insert(principal.clone());
        Ok(Authenticated(principal))
    }
}

/// An authenticated principal acting inside one resolved, active tenant.
/// Platform staff acting inside a tenant are audited.
#[derive(Clone, Debug)]
pub struct TenantScope {
    pub principal: Principal,
    pub tenant: Tenant,
    /// The tenant's in-flight slot, released when the handler drops the scope.
    _slot: Arc<OwnedSemaphorePermit>,
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
        // The plan's rate limit, before the request does any work of its
        // own. Platform staff are not counted, but see the headers.
        let plan = state.services.plan(&resolution.tenant.plan).await?;
        if let (Some(limiter), Some(per_second)) = (
            &state.services.rate_limiter,
            plan.limits.requests_per_second,
        ) {
            let staff = principal.role.is_platform();
            let info = limiter
                .check(resolution.tenant.id, per_second, !staff)
                .await;
            if let Some(slot) = parts.extensions.get::<RateSlot>() {
                let _ = slot.0.set(info);
            }
            if let Some(retry_after_secs) = info.retry_after {
                return Err(Error::RateLimited { retry_after_secs });
            }
        }
        let slot = state
            .services
            .tenant_gate
            .enter(resolution.tenant.id)
            .await
            .ok_or(Error::RateLimited {
                retry_after_secs: 1,
            })?;
        if !principal.role.is_platform() {
            let max = plan.limits.api_requests_per_day;
            if state
                .services
                .daily_quota
                .hit(&resolution.tenant, max)
                .await?
                .is_err()
            {
                return Err(Error::QuotaExceeded(
                    "the plan's daily request quota is spent".into(),
                ));
            }
        }
        if resolution.cross_tenant {
            let action = format!(
                "staff_access.{}",
                parts.method.as_str().to_ascii_lowercase()
            );
            state
                .services
                .audit(
                    Some(&resolution.tenant),
                    &principal,
                    &action,
                    parts.uri.path(),
                )
                .await?;
        }
        Ok(TenantScope {
            principal,
            tenant: resolution.tenant,
            _slot: Arc::new(slot),
        })
    }
}
