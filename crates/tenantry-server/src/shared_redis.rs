//! The Redis connection through which instances share counters (rate-limit
//! buckets, login and OTP attempts). Every user of it falls back to counting
//! per instance when Redis does not answer, so the connection is tuned to
//! fail fast and to say so rarely.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Warnings about an unreachable Redis, at most one per this many seconds
/// (every request would log one otherwise).
const WARN_EVERY_SECS: u64 = 10;

pub struct SharedRedis {
    conn: ConnectionManager,
    last_warned: AtomicU64,
}

impl SharedRedis {
    /// Connects lazily: a Redis that is down at start delays nothing (the
    /// callers fall back until it is back).
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
            last_warned: AtomicU64::new(0),
        })
    }

    /// A handle for one call (clones share the one connection).
    pub fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Logs `error` with what the fallback means, unless a warning went out
    /// in the last `WARN_EVERY_SECS`.
    pub fn warn_unreachable(&self, error: &redis::RedisError, fallback: &str) {
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
            tracing::warn!(error = %error, "Redis unreachable: {fallback}");
        }
    }
}
