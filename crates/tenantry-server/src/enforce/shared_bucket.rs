//! The token bucket held in Redis, so that every instance draws from the
//! same bucket per tenant: a tenant cannot multiply its plan's rate by the
//! number of instances behind the load balancer.
//!
//! One Lua script refills, takes and stores atomically (no two instances
//! can both take the last token). It reads Redis's own `TIME`: one clock
//! for all instances, whatever their skew.

use super::rate_limit::{BURST_SECONDS, RateInfo, verdict};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tenantry::TenantId;

/// KEYS[1] the bucket; ARGV: rate per second, capacity, consume (0/1), TTL ms.
/// Returns {allowed (0/1), tokens left (a string: Lua numbers would be
/// truncated to integers on the way out)}.
const SCRIPT: &str = r#"
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = capacity
  at = now
end
tokens = math.min(capacity, tokens + math.max(0, now - at) / 1000000 * rate)
local allowed = 0
if tokens >= 1 then allowed = 1 end
if ARGV[3] == '1' and allowed == 1 then tokens = tokens - 1 end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {allowed, tostring(tokens)}
"#;

/// A missing key is a full bucket, and a bucket left alone refills within
/// `BURST_SECONDS`: after that (plus a margin) the key can go.
const KEY_TTL_MS: u64 = (BURST_SECONDS * 1000.0) as u64 + 1000;

/// Warnings about an unreachable Redis, at most one per this many seconds
/// (every request would log one otherwise).
const WARN_EVERY_SECS: u64 = 10;

pub struct SharedBuckets {
    conn: ConnectionManager,
    script: redis::Script,
    last_warned: AtomicU64,
}

impl SharedBuckets {
    /// Connects lazily: a Redis that is down at start delays nothing (the
    /// requests fall back until it is back).
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)
            // Not the URL itself: it may carry a password.
            .map_err(|e| anyhow::anyhow!("redis_url is not a Redis URL: {e}"))?;
        // Short timeouts and no retries inside a request: a slow or absent
        // Redis costs a request a quarter second at most before the fallback.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(250)))
            .set_response_timeout(Some(Duration::from_millis(250)))
            .set_number_of_retries(0);
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| anyhow::anyhow!("setting up the Redis connection: {e}"))?;
        Ok(Self {
            conn,
            script: redis::Script::new(SCRIPT),
            last_warned: AtomicU64::new(0),
        })
    }

    pub fn key(tenant: TenantId) -> String {
        format!("tenantry:rl:{tenant}")
    }

    pub async fn check(
        &self,
        tenant: TenantId,
        per_second: u64,
        consume: bool,
    ) -> redis::RedisResult<RateInfo> {
        let rate = per_second.max(1) as f64;
        let mut conn = self.conn.clone();
        let (allowed, tokens): (i64, String) = self
            .script
            .key(Self::key(tenant))
            .arg(rate)
            .arg(rate * BURST_SECONDS)
            .arg(u8::from(consume))
            .arg(KEY_TTL_MS)
            .invoke_async(&mut conn)
            .await?;
        let tokens = tokens.parse::<f64>().map_err(|_| {
            redis::RedisError::from((
                redis::ErrorKind::Parse,
                "the bucket script returned a non-number",
                tokens,
            ))
        })?;
        Ok(verdict(tokens, rate, allowed == 1, consume))
    }

    pub fn warn_unreachable(&self, error: &redis::RedisError) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let last = self.last_warned.load(Ordering::Relaxed);
        if now >= last + WARN_EVERY_SECS
            && self
                .last_warned
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(error = %error, "Redis rate-limit buckets unreachable; limiting per instance meanwhile");
        }
    }
}
