//! A cap on each tenant's requests in flight, so one tenant's slow requests
//! cannot hold every database connection and blocking thread while other
//! tenants wait. A request over the cap queues briefly, then gets 429.

use quick_cache::sync::Cache;
use std::sync::Arc;
use std::time::Duration;
use tenantry::TenantId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct TenantGate {
    slots: Cache<TenantId, Arc<Semaphore>>,
    per_tenant: usize,
    wait: Duration,
}

impl TenantGate {
    pub fn new(per_tenant: usize, wait: Duration) -> Self {
        Self {
            // Bounded; past 100,000 tenants the least used go. An idle tenant's
            // semaphore has every permit free, so evicting it is harmless.
            slots: Cache::new(100_000),
            per_tenant: per_tenant.max(1),
            wait,
        }
    }

    /// A permit held for the request's lifetime, or `None` when the tenant
    /// already has its cap in flight for longer than the queueing wait.
    pub async fn enter(&self, tenant: TenantId) -> Option<OwnedSemaphorePermit> {
        let sem = self
            .slots
            .get_or_insert_with(&tenant, || {
                Ok::<_, std::convert::Infallible>(Arc::new(Semaphore::new(self.per_tenant)))
            })
            .unwrap_or_else(|never| match never {});
        // Most requests find a free slot: no timer for them.
        if let Ok(permit) = sem.clone().try_acquire_owned() {
            return Some(permit);
        }
        tokio::time::timeout(self.wait, sem.acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_tenant_at_its_cap_does_not_block_another() {
        let gate = TenantGate::new(2, Duration::from_millis(20));
        let (a, b) = (TenantId::new(), TenantId::new());
        let p1 = gate.enter(a).await.expect("first");
        let _p2 = gate.enter(a).await.expect("second");
        assert!(gate.enter(a).await.is_none(), "third over the cap");
        assert!(
            gate.enter(b).await.is_some(),
            "another tenant is unaffected"
        );
        drop(p1);
        assert!(
            gate.enter(a).await.is_some(),
            "a finished request frees its slot"
        );
    }
}
