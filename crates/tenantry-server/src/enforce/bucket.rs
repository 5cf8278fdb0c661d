//! Token-bucket arithmetic shared by both homes of the buckets: this
//! process (`LocalBuckets`) and Redis (`shared_bucket`, the same refill done
//! in a script), so a verdict reads the same wherever the bucket lives.

use chrono::{DateTime, Utc};
use quick_cache::sync::Cache;
use std::sync::{Arc, Mutex};
use tenantry::TenantId;
use tenantry::clock::Clock;

/// Seconds of refill a full bucket holds.
pub const BURST_SECONDS: f64 = 2.0;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateInfo {
    /// Bucket capacity (the burst).
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the bucket is full again.
    pub reset_secs: u64,
    /// Set when the request was refused: seconds until one token is back.
    pub retry_after: Option<u64>,
}

/// The verdict for a bucket holding `tokens` after the refill (and after
/// taking one, when that was allowed): the same for both backends.
pub fn verdict(tokens: f64, rate: f64, allowed: bool, consume: bool) -> RateInfo {
    let capacity = rate * BURST_SECONDS;
    let retry_after = (consume && !allowed).then(|| ((1.0 - tokens) / rate).ceil().max(1.0) as u64);
    RateInfo {
        limit: capacity as u64,
        remaining: tokens.floor().max(0.0) as u64,
        reset_secs: ((capacity - tokens) / rate).ceil().max(0.0) as u64,
        retry_after,
    }
}

struct Bucket {
    tokens: f64,
    at: DateTime<Utc>,
}

/// Buckets in this process, on the injected clock (tests move it by hand).
pub struct LocalBuckets {
    buckets: Cache<TenantId, Arc<Mutex<Bucket>>>,
    clock: Arc<dyn Clock>,
}

impl LocalBuckets {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            // Bounded; past 100,000 tenants the least used go. An idle tenant's
            // bucket is full anyway, so evicting it loses nothing.
            buckets: Cache::new(100_000),
            clock,
        }
    }

    pub fn check(&self, tenant: TenantId, per_second: u64, consume: bool) -> RateInfo {
        let rate = per_second.max(1) as f64;
        let capacity = rate * BURST_SECONDS;
        let now = self.clock.now();
        let slot = self
            .buckets
            .get_or_insert_with(&tenant, || {
                Ok::<_, std::convert::Infallible>(Arc::new(Mutex::new(Bucket {
                    tokens: capacity,
                    at: now,
                })))
            })
            .unwrap_or_else(|never| match never {});
        let mut b = slot.lock().unwrap_or_else(|p| p.into_inner());
        let elapsed = (now - b.at).num_microseconds().unwrap_or(i64::MAX).max(0) as f64 / 1e6;
        b.tokens = (b.tokens + elapsed * rate).min(capacity);
        b.at = now;
        let allowed = b.tokens >= 1.0;
        if consume && allowed {
            b.tokens -= 1.0;
        }
        verdict(b.tokens, rate, allowed, consume)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenantry::clock::ManualClock;

    #[test]
    fn burst_of_two_seconds_then_refill_at_the_plan_rate() {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let limiter = LocalBuckets::new(clock.clone());
        let t = TenantId::new();
        for i in 0..20 {
            let info = limiter.check(t, 10, true);
            assert_eq!(info.retry_after, None, "request {i} of the burst");
            assert_eq!(info.limit, 20);
            assert_eq!(info.remaining, 19 - i);
        }
        let refused = limiter.check(t, 10, true);
        assert_eq!(refused.retry_after, Some(1));
        assert_eq!(refused.reset_secs, 2);
        clock.advance(chrono::Duration::milliseconds(500));
        for _ in 0..5 {
            assert_eq!(
                limiter.check(t, 10, true).retry_after,
                None,
                "5 tokens back after 0.5 s"
            );
        }
        assert!(limiter.check(t, 10, true).retry_after.is_some());
        // Other tenants have their own buckets.
        assert_eq!(limiter.check(TenantId::new(), 10, true).retry_after, None);
        // Looking without consuming takes nothing.
        clock.advance(chrono::Duration::seconds(10));
        assert_eq!(limiter.check(t, 10, false).remaining, 20);
        assert_eq!(limiter.check(t, 10, false).remaining, 20);
    }
}
