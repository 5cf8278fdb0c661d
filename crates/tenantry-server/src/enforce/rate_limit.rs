//! Per-tenant token buckets: `requests_per_second` of the tenant's plan, with
//! a burst of two seconds' worth. Checked before a request does any database
//! work; the verdict travels to the response as `RateLimit-*` headers.

use super::bucket::{LocalBuckets, RateInfo};
use super::shared_bucket::SharedBuckets;
use std::sync::{Arc, OnceLock};
use tenantry::TenantId;
use tenantry::clock::Clock;

/// Where the verdict is left for the response headers (filled by the
/// tenant extractor, read by the observation middleware).
#[derive(Clone, Default)]
pub struct RateSlot(pub Arc<OnceLock<RateInfo>>);

/// Where the buckets live: in this process, or in Redis so that every
/// instance behind the load balancer draws from the same bucket.
pub enum RateLimiter {
    Local(LocalBuckets),
    Shared {
        shared: SharedBuckets,
        /// Used while Redis cannot be reached (see `check`).
        fallback: LocalBuckets,
    },
}

impl RateLimiter {
    /// In-process buckets, or Redis-held ones when `redis_url` is set.
    pub fn new(clock: Arc<dyn Clock>, redis_url: Option<&str>) -> anyhow::Result<Self> {
        Ok(match redis_url {
            None => Self::Local(LocalBuckets::new(clock)),
            Some(url) => Self::Shared {
                shared: SharedBuckets::new(url)?,
                fallback: LocalBuckets::new(clock),
            },
        })
    }

    /// Takes one token if `consume` (else only reports the state).
    pub async fn check(&self, tenant: TenantId, per_second: u64, consume: bool) -> RateInfo {
        match self {
            Self::Local(local) => local.check(tenant, per_second, consume),
            Self::Shared { shared, fallback } => {
                match shared.check(tenant, per_second, consume).await {
                    Ok(info) => info,
                    // Fail open to this instance's own bucket: a Redis outage
                    // must not take every tenant's API down with it, and the
                    // local bucket still holds each instance to the plan's
                    // rate (so at worst instances × rate overall, briefly).
                    Err(e) => {
                        shared.warn_unreachable(&e);
                        fallback.check(tenant, per_second, consume)
                    }
                }
            }
        }
    }
}
