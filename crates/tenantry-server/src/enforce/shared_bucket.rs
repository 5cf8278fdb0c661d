//! The token bucket held in Redis, so that every instance draws from the
//! same bucket per tenant: a tenant cannot multiply its plan's rate by the
//! number of instances behind the load balancer.
//!
//! One Lua script refills, takes and stores atomically (no two instances
//! can both take the last token). It reads Redis's own `TIME`: one clock
//! for all instances, whatever their skew.

use super::bucket::{BURST_SECONDS, RateInfo, verdict};
use crate::shared_redis::SharedRedis;
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

pub struct SharedBuckets {
    redis: SharedRedis,
    script: redis::Script,
}

impl SharedBuckets {
    pub fn new(url: &str) -> anyhow::Result<Self> {
        Ok(Self {
            redis: SharedRedis::new(url)?,
            script: redis::Script::new(SCRIPT),
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
        let mut conn = self.redis.conn();
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
        self.redis
            .warn_unreachable(error, "rate-limit buckets are per instance meanwhile");
    }
}
