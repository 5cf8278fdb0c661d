//! Brute-force and pumping protection: attempts are counted per key (an
//! account, a client address, a phone, a tenant) in fixed windows; past a
//! key's limit, attempts are refused with 429 until its window ends.
//!
//! An attempt is counted *before* the work it guards (the argon2 check, the
//! SMS), in one atomic step over all its keys: 500 wrong passwords sent at
//! once are `max` guesses, not 500. A login that succeeds gives its count
//! back. With Redis configured the counters live there, shared by every
//! instance (one Lua script checks and counts all keys); Redis unreachable,
//! each instance counts on its own until it is back.

use crate::shared_redis::SharedRedis;
use chrono::{DateTime, Duration, Utc};
use moka::sync::Cache;
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};
use tenantry::TenantId;

/// At most `max` attempts per `window`.
#[derive(Clone, Copy, Debug)]
pub struct Limit {
    pub max: u32,
    pub window: Duration,
}

/// The limits of each kind of attempt.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Failed logins of one account (also: OTP codes sent to one phone).
    pub account: Limit,
    /// Failed logins from one client address.
    pub address: Limit,
    /// OTP codes requested from one client address.
    pub otp_address: Limit,
    /// OTP codes sent for one tenant.
    pub otp_tenant: Limit,
}

pub struct LoginGuard {
    limits: Limits,
    local: LocalCounters,
    shared: Option<SharedCounters>,
}

impl LoginGuard {
    pub fn new(limits: Limits, redis_url: Option<&str>) -> anyhow::Result<Self> {
        Ok(Self {
            limits,
            local: LocalCounters::new(),
            shared: redis_url.map(SharedCounters::new).transpose()?,
        })
    }

    /// Counts a login attempt; refused (seconds to wait) when the account or
    /// the address has no attempt left.
    pub async fn login_attempt(
        &self,
        account: &str,
        address: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), u64> {
        let mut keys = vec![(account_key(account), self.limits.account)];
        if let Some(a) = address {
            keys.push((address_key(a), self.limits.address));
        }
        self.take(&keys, now).await
    }

    /// A successful login: the account starts over, the address gets its
    /// attempt back (only failures count against it).
    pub async fn login_succeeded(&self, account: &str, address: Option<&str>) {
        let mut reset = vec![(account_key(account), true)];
        if let Some(a) = address {
            reset.push((address_key(a), false));
        }
        self.give_back(&reset).await;
    }

    /// Counts an OTP send: per phone, per client address and per tenant.
    pub async fn otp_send(
        &self,
        tenant: TenantId,
        phone: &str,
        address: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), u64> {
        let mut keys = vec![
            (format!("otp:{tenant}/{phone}"), self.limits.account),
            (format!("otp-tenant:{tenant}"), self.limits.otp_tenant),
        ];
        if let Some(a) = address {
            keys.push((format!("otp-addr:{a}"), self.limits.otp_address));
        }
        self.take(&keys, now).await
    }

    async fn take(&self, keys: &[(String, Limit)], now: DateTime<Utc>) -> Result<(), u64> {
        if let Some(shared) = &self.shared
            && let Some(verdict) = shared.take(keys).await
        {
            return verdict;
        }
        self.local.take(keys, now)
    }

    async fn give_back(&self, keys: &[(String, bool)]) {
        if let Some(shared) = &self.shared
            && shared.give_back(keys).await
        {
            return;
        }
        self.local.give_back(keys);
    }
}

fn account_key(account: &str) -> String {
    format!("acct:{}", account.to_lowercase())
}

fn address_key(address: &str) -> String {
    format!("addr:{address}")
}

#[derive(Clone, Copy, Debug)]
struct Window {
    started: DateTime<Utc>,
    attempts: u32,
}

/// Counters of this process.
struct LocalCounters {
    windows: Cache<String, Arc<Mutex<Window>>>,
}

impl LocalCounters {
    fn new() -> Self {
        Self {
            // Bounded, so a flood of distinct emails cannot grow memory without limit.
            windows: Cache::builder().max_capacity(100_000).build(),
        }
    }

    fn take(&self, keys: &[(String, Limit)], now: DateTime<Utc>) -> Result<(), u64> {
        // Every key's window locked at once (in key order: no deadlock), so
        // the check and the count are one step.
        let mut slots: Vec<(&String, Limit, Arc<Mutex<Window>>)> = keys
            .iter()
            .map(|(key, limit)| {
                let slot = self.windows.get_with(key.clone(), || {
                    Arc::new(Mutex::new(Window {
                        started: now,
                        attempts: 0,
                    }))
                });
                (key, *limit, slot)
            })
            .collect();
        slots.sort_by(|a, b| a.0.cmp(b.0));
        let mut locked: Vec<_> = slots
            .iter()
            .map(|(_, limit, slot)| (*limit, slot.lock().unwrap_or_else(|p| p.into_inner())))
            .collect();
        let mut wait = None;
        for (limit, w) in locked.iter_mut() {
            let ends = w.started + limit.window;
            if now >= ends {
                **w = Window {
                    started: now,
                    attempts: 0,
                };
            } else if w.attempts >= limit.max {
                let secs = (ends - now).num_seconds().max(1) as u64;
                wait = wait.max(Some(secs));
            }
        }
        if let Some(secs) = wait {
            return Err(secs);
        }
        for (_, w) in locked.iter_mut() {
            w.attempts += 1;
        }
        Ok(())
    }

    /// `(key, true)` starts the key over; `(key, false)` gives one back.
    fn give_back(&self, keys: &[(String, bool)]) {
        for (key, reset) in keys {
            if *reset {
                self.windows.invalidate(key);
            } else if let Some(slot) = self.windows.get(key) {
                let mut w = slot.lock().unwrap_or_else(|p| p.into_inner());
                w.attempts = w.attempts.saturating_sub(1);
            }
        }
    }
}

/// KEYS: the counters; ARGV: max and window (ms) of each key in turn.
/// Refuses (returns the longest wait in ms) when any key is spent, else
/// counts every key and returns 0. Redis's own clock times the windows.
const TAKE: &str = r#"
local wait = 0
for i, key in ipairs(KEYS) do
  local n = tonumber(redis.call('GET', key) or '0')
  if n >= tonumber(ARGV[2 * i - 1]) then
    local ttl = redis.call('PTTL', key)
    if ttl < 0 then ttl = tonumber(ARGV[2 * i]) end
    if ttl > wait then wait = ttl end
  end
end
if wait > 0 then return wait end
for i, key in ipairs(KEYS) do
  if redis.call('INCR', key) == 1 then redis.call('PEXPIRE', key, ARGV[2 * i]) end
end
return 0
"#;

/// KEYS: the counters; ARGV: '1' to delete the key, '0' to give one back.
const GIVE_BACK: &str = r#"
for i, key in ipairs(KEYS) do
  if ARGV[i] == '1' then
    redis.call('DEL', key)
  elseif tonumber(redis.call('GET', key) or '0') > 0 then
    redis.call('DECR', key)
  end
end
return 0
"#;

/// Counters in Redis, shared by every instance.
struct SharedCounters {
    redis: SharedRedis,
    take: redis::Script,
    give_back: redis::Script,
}

impl SharedCounters {
    fn new(url: &str) -> anyhow::Result<Self> {
        Ok(Self {
            redis: SharedRedis::new(url)?,
            take: redis::Script::new(TAKE),
            give_back: redis::Script::new(GIVE_BACK),
        })
    }

    /// Emails and addresses stay out of Redis: keys are their hashes.
    fn redis_key(key: &str) -> String {
        let digest = Sha256::digest(key.as_bytes());
        format!("tenantry:att:{}", hex::encode(&digest[..16]))
    }

    /// None when Redis did not answer (the caller counts locally).
    async fn take(&self, keys: &[(String, Limit)]) -> Option<Result<(), u64>> {
        let mut invocation = self.take.prepare_invoke();
        for (key, _) in keys {
            invocation.key(Self::redis_key(key));
        }
        for (_, limit) in keys {
            invocation
                .arg(limit.max)
                .arg(limit.window.num_milliseconds().max(1));
        }
        let mut conn = self.redis.conn();
        match invocation.invoke_async::<i64>(&mut conn).await {
            Ok(0) => Some(Ok(())),
            Ok(wait_ms) => Some(Err(((wait_ms + 999) / 1000).max(1) as u64)),
            Err(e) => {
                self.warn(&e);
                None
            }
        }
    }

    /// False when Redis did not answer.
    async fn give_back(&self, keys: &[(String, bool)]) -> bool {
        let mut invocation = self.give_back.prepare_invoke();
        for (key, reset) in keys {
            invocation
                .key(Self::redis_key(key))
                .arg(if *reset { "1" } else { "0" });
        }
        let mut conn = self.redis.conn();
        match invocation.invoke_async::<i64>(&mut conn).await {
            Ok(_) => true,
            Err(e) => {
                self.warn(&e);
                false
            }
        }
    }

    fn warn(&self, e: &redis::RedisError) {
        self.redis
            .warn_unreachable(e, "login and OTP attempts counted per instance");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(account: u32, address: u32) -> Limits {
        let window = Duration::minutes(15);
        Limits {
            account: Limit {
                max: account,
                window,
            },
            address: Limit {
                max: address,
                window,
            },
            otp_address: Limit {
                max: 2,
                window: Duration::hours(1),
            },
            otp_tenant: Limit {
                max: 3,
                window: Duration::hours(1),
            },
        }
    }

    #[tokio::test]
    async fn locks_after_max_attempts_and_unlocks_after_the_window_or_a_success() {
        let guard = LoginGuard::new(limits(3, 100), None).expect("guard");
        let t0 = Utc::now();
        for _ in 0..3 {
            assert!(guard.login_attempt("t/a@x", None, t0).await.is_ok());
        }
        let wait = guard
            .login_attempt("T/A@X", None, t0)
            .await
            .expect_err("locked, case-insensitively");
        assert_eq!(wait, 15 * 60);
        assert!(
            guard.login_attempt("t/other@x", None, t0).await.is_ok(),
            "other accounts unaffected"
        );
        assert!(
            guard
                .login_attempt("t/a@x", None, t0 + Duration::minutes(15))
                .await
                .is_ok(),
            "window over"
        );
        guard.login_succeeded("t/a@x", None).await;
        assert!(
            guard.login_attempt("t/a@x", None, t0).await.is_ok(),
            "success resets"
        );
    }

    #[tokio::test]
    async fn one_address_trying_many_accounts_is_locked_too_and_successes_do_not_count() {
        let guard = LoginGuard::new(limits(5, 3), None).expect("guard");
        let t0 = Utc::now();
        guard
            .login_attempt("t/ok@x", Some("10.0.0.1"), t0)
            .await
            .expect("first");
        guard.login_succeeded("t/ok@x", Some("10.0.0.1")).await;
        for i in 0..3 {
            let account = format!("t/user{i}@x");
            assert!(
                guard
                    .login_attempt(&account, Some("10.0.0.1"), t0)
                    .await
                    .is_ok()
            );
        }
        assert!(
            guard
                .login_attempt("t/fresh@x", Some("10.0.0.1"), t0)
                .await
                .is_err()
        );
        assert!(
            guard
                .login_attempt("t/fresh@x", Some("10.0.0.2"), t0)
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn concurrent_attempts_get_exactly_max_through() {
        let guard = Arc::new(LoginGuard::new(limits(5, 1000), None).expect("guard"));
        let t0 = Utc::now();
        let tries = (0..200).map(|_| {
            let guard = guard.clone();
            tokio::spawn(async move { guard.login_attempt("t/a@x", Some("10.0.0.1"), t0).await })
        });
        let mut through = 0;
        for t in tries {
            if t.await.expect("task").is_ok() {
                through += 1;
            }
        }
        assert_eq!(through, 5);
    }

    #[tokio::test]
    async fn otp_sends_are_limited_per_address_and_per_tenant() {
        let guard = LoginGuard::new(limits(5, 100), None).expect("guard");
        let t0 = Utc::now();
        let tenant = TenantId(uuid::Uuid::new_v4());
        assert!(
            guard
                .otp_send(tenant, "+100", Some("10.0.0.1"), t0)
                .await
                .is_ok()
        );
        assert!(
            guard
                .otp_send(tenant, "+101", Some("10.0.0.1"), t0)
                .await
                .is_ok()
        );
        assert!(
            guard
                .otp_send(tenant, "+102", Some("10.0.0.1"), t0)
                .await
                .is_err(),
            "third send from one address in the hour"
        );
        assert!(
            guard
                .otp_send(tenant, "+102", Some("10.0.0.2"), t0)
                .await
                .is_ok()
        );
        assert!(
            guard
                .otp_send(tenant, "+103", Some("10.0.0.3"), t0)
                .await
                .is_err(),
            "fourth send of the tenant in the hour"
        );
        let other = TenantId(uuid::Uuid::new_v4());
        assert!(
            guard
                .otp_send(other, "+103", Some("10.0.0.3"), t0)
                .await
                .is_ok()
        );
        assert!(
            guard
                .otp_send(tenant, "+103", Some("10.0.0.3"), t0 + Duration::hours(1))
                .await
                .is_ok(),
            "a new hour"
        );
    }
}
