//! The way into a request: who the caller is (`authenticate`) and whether
//! its tenant's plan lets the request in now (`admit`). The HTTP edge calls
//! both once per request; the order of the plan's checks is read here only.

use super::{Admission, Identity};
use crate::enforce::bucket::RateInfo;
use crate::error::{Error, Result};
use tenantry::resolve::Resolution;
use tenantry::{Principal, TenantId};
use tokio::sync::OwnedSemaphorePermit;

/// An admitted request's hold on its tenant's in-flight slot, released
/// when it is dropped (the request ended).
#[derive(Debug)]
pub struct Admitted {
    _slot: OwnedSemaphorePermit,
}

impl Identity {
    /// The principal a bearer token proves. A valid signature is not
    /// enough: the user, active and in the same role, and its tenant must
    /// still exist (cached briefly; every change here invalidates it).
    pub async fn authenticate(&self, token: &str) -> Result<Principal> {
        let principal = self.tokens.verify(token)?;
        let key = (principal.tenant_id, principal.user_id);
        let role = self
            .core
            .caches
            .users
            .get_or_try_insert_with(&key, async {
                Ok::<_, Error>(match principal.tenant_id {
                    None => self
                        .core
                        .store
                        .platform_user(principal.user_id)
                        .await?
                        .map(|u| u.role),
                    Some(tid) => match self.core.resolver.find(&tid.to_string()).await? {
                        None => None,
                        Some(tenant) => self
                            .core
                            .store
                            .user(&tenant, principal.user_id)
                            .await?
                            .filter(|u| u.active)
                            .map(|u| u.role),
                    },
                })
            })
            .await?;
        if role == Some(principal.role) {
            Ok(principal)
        } else {
            Err(Error::Unauthorized)
        }
    }
}

impl Admission {
    /// Lets a request of `principal` into its resolved tenant, checking the
    /// plan in this order:
    /// 1. the rate limit, before the request does any database work of its
    ///    own (platform staff are not counted, but see the verdict);
    /// 2. the tenant's in-flight slot (`max_concurrent`), or 429;
    /// 3. the daily request quota (not for staff), or 403 `quota_exceeded`;
    /// 4. staff acting inside a tenant leave an audit entry there.
    ///
    /// `on_rate` receives the rate verdict as soon as it is known, so a
    /// refusal carries the headers too.
    pub async fn admit(
        &self,
        principal: &Principal,
        resolution: &Resolution,
        method: &str,
        path: &str,
        on_rate: impl FnOnce(RateInfo),
    ) -> Result<Admitted> {
        let tenant = &resolution.tenant;
        let staff = principal.role.is_platform();
        let plan = self.core.plan(&tenant.plan).await?;
        if let (Some(limiter), Some(per_second)) =
            (&self.rate_limiter, plan.limits.requests_per_second)
        {
            let info = limiter.check(tenant.id, per_second, !staff).await;
            on_rate(info);
            if let Some(retry_after_secs) = info.retry_after {
                return Err(Error::RateLimited { retry_after_secs });
            }
        }
        let slot = self.enter(tenant.id).await?;
        if !staff
            && self
                .daily_quota
                .hit(tenant, plan.limits.api_requests_per_day)
                .await?
                .is_err()
        {
            return Err(Error::QuotaExceeded(
                "the plan's daily request quota is spent".into(),
            ));
        }
        if resolution.cross_tenant {
            let action = format!("staff_access.{}", method.to_ascii_lowercase());
            self.core
                .audit(Some(tenant), principal, &action, path)
                .await?;
        }
        Ok(Admitted { _slot: slot })
    }

    async fn enter(&self, tenant: TenantId) -> Result<OwnedSemaphorePermit> {
        self.tenant_gate
            .enter(tenant)
            .await
            .ok_or(Error::RateLimited {
                retry_after_secs: 1,
            })
    }
}
