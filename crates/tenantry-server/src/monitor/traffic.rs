//! Per-tenant sliding windows of recent traffic: request and 5xx counts,
//! and latencies for percentiles, over the last `WINDOW`.
//!
//! Bounded whatever the traffic: counts live in `BUCKET`-wide buckets (at
//! most `WINDOW / BUCKET` per tenant), latencies in a ring of the last
//! `MAX_SAMPLES` requests, and a tenant idle for a whole window is evicted.

use chrono::{DateTime, Utc};
use quick_cache::sync::Cache;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tenantry::TenantId;
use tenantry::clock::Clock;

/// How far back the figures reach.
pub const WINDOW: Duration = Duration::from_secs(5 * 60);
/// Width of one count bucket: counts may reach this much past `WINDOW`.
const BUCKET_SECS: i64 = 10;
/// Latencies kept per tenant; percentiles are over the most recent ones.
const MAX_SAMPLES: usize = 512;
/// Tenants tracked at once (the least recently active go first).
/// Worst case: MAX_TENANTS × MAX_SAMPLES × 16 bytes ≈ 165 MB; in practice a
/// tenant holds as many samples as it had requests in the window.
const MAX_TENANTS: usize = 20_000;
/// Every this many recorded requests, windows idle for a whole `WINDOW` are
/// dropped (a sweep visits every tracked tenant: rare enough to be free).
const SWEEP_EVERY: u64 = 8_192;

/// One tenant's figures over the window.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct WindowStats {
    pub requests: u64,
    /// Responses with a 5xx status. 4xx (including 429) are the client's
    /// doing, not the tenant's service failing, and do not count.
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl WindowStats {
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

#[derive(Default)]
struct Window {
    /// (bucket start in unix seconds, requests, errors), oldest first.
    counts: VecDeque<(i64, u64, u64)>,
    /// (when, latency in ms), oldest first.
    /// (when in unix milliseconds, latency in ms): 16 bytes a sample rather
    /// than 24, for up to `MAX_SAMPLES` per tenant.
    samples: VecDeque<(i64, f32)>,
}

impl Window {
    fn forget_before(&mut self, since: DateTime<Utc>) {
        let first_bucket = since.timestamp().div_euclid(BUCKET_SECS) * BUCKET_SECS;
        while self.counts.front().is_some_and(|c| c.0 < first_bucket) {
            self.counts.pop_front();
        }
        let since_ms = since.timestamp_millis();
        while self.samples.front().is_some_and(|s| s.0 < since_ms) {
            self.samples.pop_front();
        }
    }
}

pub struct TrafficWindows {
    tenants: Cache<TenantId, Arc<Mutex<Window>>>,
    recorded: AtomicU64,
    clock: Arc<dyn Clock>,
}

impl TrafficWindows {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            tenants: Cache::new(MAX_TENANTS),
            recorded: AtomicU64::new(0),
            clock,
        }
    }

    fn since(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now - chrono::Duration::from_std(WINDOW).unwrap_or(chrono::Duration::MAX)
    }

    /// Counts one answered request of `tenant`.
    pub fn record(&self, tenant: TenantId, status: u16, latency: Duration) {
        let now = self.clock.now();
        if self.recorded.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.sweep(now);
        }
        let window = self
            .tenants
            .get_or_insert_with(&tenant, || {
                Ok::<_, std::convert::Infallible>(Default::default())
            })
            .unwrap_or_else(|never| match never {});
        let mut w = window.lock().unwrap_or_else(|p| p.into_inner());
        w.forget_before(self.since(now));
        let bucket = now.timestamp().div_euclid(BUCKET_SECS) * BUCKET_SECS;
        let error = u64::from(status >= 500);
        match w.counts.back_mut() {
            Some(last) if last.0 == bucket => {
                last.1 += 1;
                last.2 += error;
            }
            _ => w.counts.push_back((bucket, 1, error)),
        }
        // A refusal takes microseconds: sampled, a tenant flooding past its
        // limit would look faster than what it was actually served.
        if status == 429 {
            return;
        }
        if w.samples.len() == MAX_SAMPLES {
            w.samples.pop_front();
        }
        w.samples
            .push_back((now.timestamp_millis(), latency.as_secs_f32() * 1000.0));
    }

    /// Drops the windows of tenants idle for a whole window.
    fn sweep(&self, now: DateTime<Utc>) {
        let since = self.since(now);
        self.tenants.retain(|_, window| {
            let mut w = window.lock().unwrap_or_else(|p| p.into_inner());
            w.forget_before(since);
            !(w.counts.is_empty() && w.samples.is_empty())
        });
    }

    /// `tenant`'s figures over the window (all zero for a quiet tenant).
    pub fn stats(&self, tenant: TenantId) -> WindowStats {
        let Some(window) = self.tenants.get(&tenant) else {
            return WindowStats::default();
        };
        let mut w = window.lock().unwrap_or_else(|p| p.into_inner());
        let (requests, errors) = self.counts(&mut w);
        let mut latencies: Vec<f64> = w.samples.iter().map(|s| f64::from(s.1)).collect();
        latencies.sort_by(f64::total_cmp);
        WindowStats {
            requests,
            errors,
            p50_ms: percentile(&latencies, 0.50),
            p99_ms: percentile(&latencies, 0.99),
        }
    }

    /// Requests and errors in the window (no percentiles: cheap enough to
    /// ask of every tenant at each scrape).
    fn counts(&self, w: &mut Window) -> (u64, u64) {
        w.forget_before(self.since(self.clock.now()));
        w.counts.iter().fold((0, 0), |(r, e), c| (r + c.1, e + c.2))
    }

    /// The `n` tenants with the most requests in the window, busiest first.
    pub fn top(&self, n: usize) -> Vec<(TenantId, u64)> {
        let mut all: Vec<(TenantId, u64)> = self
            .tenants
            .iter()
            .map(|(tenant, window)| {
                let mut w = window.lock().unwrap_or_else(|p| p.into_inner());
                (tenant, self.counts(&mut w).0)
            })
            .filter(|(_, requests)| *requests > 0)
            .collect();
        // Ties by id, so that the chosen set does not flap between scrapes.
        all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }
}

/// Nearest-rank percentile of sorted values (0 when there are none).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenantry::clock::ManualClock;

    #[test]
    fn counts_the_window_only_and_5xx_as_errors() {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let windows = TrafficWindows::new(clock.clone());
        let (t, other) = (TenantId::new(), TenantId::new());
        for ms in 1..=100 {
            windows.record(t, 200, Duration::from_millis(ms));
        }
        windows.record(t, 503, Duration::from_millis(5));
        windows.record(t, 429, Duration::from_millis(5));
        let s = windows.stats(t);
        assert_eq!((s.requests, s.errors), (102, 1));
        assert!(s.p50_ms <= s.p99_ms && s.p99_ms >= 99.0, "{s:?}");
        assert_eq!(windows.stats(other), WindowStats::default());
        windows.record(other, 200, Duration::from_millis(1));
        assert_eq!(windows.top(1), vec![(t, 102)]);
        // Past the window (and a bucket) everything is forgotten.
        clock.advance(chrono::Duration::seconds(5 * 60 + BUCKET_SECS));
        assert_eq!(windows.stats(t), WindowStats::default());
        assert!(windows.top(5).is_empty());
    }

    #[test]
    fn windows_idle_for_a_whole_window_are_swept() {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let windows = TrafficWindows::new(clock.clone());
        let (idle, busy) = (TenantId::new(), TenantId::new());
        windows.record(idle, 200, Duration::from_millis(1));
        clock.advance(chrono::Duration::seconds(5 * 60 + BUCKET_SECS));
        for _ in 0..SWEEP_EVERY {
            windows.record(busy, 200, Duration::from_millis(1));
        }
        assert!(windows.tenants.get(&idle).is_none(), "idle tenant swept");
        assert!(windows.tenants.get(&busy).is_some(), "busy tenant kept");
    }

    #[test]
    fn latency_samples_are_bounded() {
        let windows = TrafficWindows::new(Arc::new(tenantry::clock::SystemClock));
        let t = TenantId::new();
        for _ in 0..(MAX_SAMPLES + 10) {
            windows.record(t, 200, Duration::from_millis(1));
        }
        let window = windows.tenants.get(&t).expect("tracked");
        assert_eq!(window.lock().expect("lock").samples.len(), MAX_SAMPLES);
        assert_eq!(windows.stats(t).requests, (MAX_SAMPLES + 10) as u64);
    }
}
