//! The daily request quota (`api_requests_per_day`), counted per tenant per
//! UTC day. Counting happens in memory; a background task adds the pending
//! counts to the store in one batch every few seconds (and at shutdown), so
//! counters survive restarts without a write per request.

use chrono::NaiveDate;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tenantry::clock::Clock;
use tenantry::store::{Store, StoreResult};
use tenantry::{Tenant, TenantId};

#[derive(Clone, Copy, Default)]
struct Counter {
    /// Already in the store.
    stored: u64,
    /// Counted here, not yet flushed.
    pending: u64,
}

pub struct DailyQuota {
    counters: Mutex<HashMap<(TenantId, NaiveDate), Counter>>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
}

/// The quota is spent for today.
#[derive(Debug)]
pub struct Exhausted;

impl DailyQuota {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        Self {
            counters: Mutex::new(HashMap::new()),
            store,
            clock,
        }
    }

    fn today(&self) -> NaiveDate {
        self.clock.now().date_naive()
    }

    /// Counts one request against `max` (None: unlimited, still counted).
    pub async fn hit(
        &self,
        tenant: &Tenant,
        max: Option<u64>,
    ) -> StoreResult<Result<u64, Exhausted>> {
        let key = (tenant.id, self.today());
        let known = self
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&key);
        if !known {
            // First request of the day in this process: start from the store.
            let stored = self
                .store
                .request_counts(tenant, key.1, key.1)
                .await?
                .first()
                .map_or(0, |(_, n)| *n);
            self.counters
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(key)
                .or_insert(Counter { stored, pending: 0 });
        }
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let c = counters.entry(key).or_default();
        let used = c.stored + c.pending;
        if max.is_some_and(|m| used >= m) {
            return Ok(Err(Exhausted));
        }
        c.pending += 1;
        Ok(Ok(used + 1))
    }

    /// Today's count for the tenant as this process knows it (stored + pending).
    pub async fn today_count(&self, tenant: &Tenant) -> StoreResult<u64> {
        let key = (tenant.id, self.today());
        if let Some(c) = self
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(c.stored + c.pending);
        }
        Ok(self
            .store
            .request_counts(tenant, key.1, key.1)
            .await?
            .first()
            .map_or(0, |(_, n)| *n))
    }

    /// Pending counts not yet in the store, for reports.
    pub fn pending(&self, tenant: TenantId) -> Vec<(NaiveDate, u64)> {
        let counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        counters
            .iter()
            .filter(|((t, _), c)| *t == tenant && c.pending > 0)
            .map(|((_, day), c)| (*day, c.pending))
            .collect()
    }

    /// Writes pending counts in one batch and learns each counter's total
    /// across every instance (today's counters are sent even with nothing
    /// pending, to refresh them), so N instances sharing a store overshoot
    /// the quota by at most one flush interval's requests, not N×; forgets
    /// past days once written.
    pub async fn flush(&self) -> StoreResult<()> {
        let today = self.today();
        let batch: Vec<(TenantId, NaiveDate, u64)> = {
            let counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
            counters
                .iter()
                .filter(|((_, day), c)| c.pending > 0 || *day == today)
                .map(|((t, d), c)| (*t, *d, c.pending))
                .collect()
        };
        let totals = if batch.is_empty() {
            Vec::new()
        } else {
            self.store.add_request_counts(&batch).await?
        };
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        for (t, d, n) in &batch {
            if let Some(c) = counters.get_mut(&(*t, *d)) {
                c.pending -= (*n).min(c.pending);
            }
        }
        let mut answered = std::collections::HashSet::with_capacity(totals.len());
        for (t, d, total) in totals {
            if let Some(c) = counters.get_mut(&(t, d)) {
                c.stored = total;
            }
            answered.insert((t, d));
        }
        // Kept: what is pending, and today's counters the store still
        // counts. Dropped: past days once written, and tenants the store
        // no longer counts (deleted) — nothing more will be added to them.
        let sent: std::collections::HashSet<_> = batch.iter().map(|(t, d, _)| (*t, *d)).collect();
        counters.retain(|key, c| {
            c.pending > 0 || (key.1 >= today && (!sent.contains(key) || answered.contains(key)))
        });
        Ok(())
    }
}
