//! Brute-force protection for logins: failures are counted per account and
//! per client address within a window; past the limit, logins are refused
//! with 429 until the window ends or a login succeeds.

use chrono::{DateTime, Duration, Utc};
use moka::sync::Cache;
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, Debug)]
struct Window {
    first_failure: DateTime<Utc>,
    failures: u32,
}

pub struct LoginGuard {
    windows: Cache<String, Arc<Mutex<Window>>>,
    window: Duration,
    max_per_account: u32,
    max_per_address: u32,
}

impl LoginGuard {
    pub fn new(max_per_account: u32, max_per_address: u32, window: Duration) -> Self {
        Self {
            // Bounded, so a flood of distinct emails cannot grow memory without limit.
            windows: Cache::builder().max_capacity(100_000).build(),
            window,
            max_per_account,
            max_per_address,
        }
    }

    /// Seconds until `key` may try again, if it is locked out now.
    fn locked_for(&self, key: &str, max: u32, now: DateTime<Utc>) -> Option<u64> {
        let w = *self
            .windows
            .get(key)?
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let ends = w.first_failure + self.window;
        (w.failures >= max && now < ends).then(|| (ends - now).num_seconds().max(1) as u64)
    }

    fn record(&self, key: String, now: DateTime<Utc>) {
        let slot = self.windows.get_with(key, || {
            Arc::new(Mutex::new(Window {
                first_failure: now,
                failures: 0,
            }))
        });
        let mut w = slot.lock().unwrap_or_else(|p| p.into_inner());
        if now >= w.first_failure + self.window {
            *w = Window {
                first_failure: now,
                failures: 0,
            };
        }
        w.failures += 1;
    }

    /// Refuses (with seconds to wait) when the account or the address is locked.
    pub fn check(
        &self,
        account: &str,
        address: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), u64> {
        let account_lock = self.locked_for(&account_key(account), self.max_per_account, now);
        let address_lock =
            address.and_then(|a| self.locked_for(&address_key(a), self.max_per_address, now));
        match account_lock.max(address_lock) {
            Some(secs) => Err(secs),
            None => Ok(()),
        }
    }

    pub fn failed(&self, account: &str, address: Option<&str>, now: DateTime<Utc>) {
        self.record(account_key(account), now);
        if let Some(a) = address {
            self.record(address_key(a), now);
        }
    }

    /// A successful login clears the account's failures.
    pub fn succeeded(&self, account: &str) {
        self.windows.invalidate(&account_key(account));
    }
}

fn account_key(account: &str) -> String {
    format!("acct:{}", account.to_lowercase())
}

fn address_key(address: &str) -> String {
    format!("addr:{address}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_max_failures_and_unlocks_after_the_window_or_a_success() {
        let guard = LoginGuard::new(3, 100, Duration::minutes(15));
        let t0 = Utc::now();
        for _ in 0..3 {
            assert!(guard.check("t/a@x", None, t0).is_ok());
            guard.failed("t/a@x", None, t0);
        }
        let wait = guard
            .check("T/A@X", None, t0)
            .expect_err("locked, case-insensitively");
        assert_eq!(wait, 15 * 60);
        assert!(
            guard.check("t/other@x", None, t0).is_ok(),
            "other accounts unaffected"
        );
        assert!(
            guard
                .check("t/a@x", None, t0 + Duration::minutes(15))
                .is_ok(),
            "window over"
        );
        guard.succeeded("t/a@x");
        assert!(guard.check("t/a@x", None, t0).is_ok(), "success resets");
    }

    #[test]
    fn one_address_trying_many_accounts_is_locked_too() {
        let guard = LoginGuard::new(5, 3, Duration::minutes(15));
        let t0 = Utc::now();
        for i in 0..3 {
            guard.failed(&format!("t/user{i}@x"), Some("10.0.0.1"), t0);
        }
        assert!(guard.check("t/fresh@x", Some("10.0.0.1"), t0).is_err());
        assert!(guard.check("t/fresh@x", Some("10.0.0.2"), t0).is_ok());
    }
}
