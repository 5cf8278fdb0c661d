//! Dedicated tenants' pools: one registry per server, which opens a small
//! runtime pool per tenant on first use, closes it when idle, and bounds the
//! connections all of them hold together with one semaphore.

use super::tenant::{Backend, PgTenantData, without_statement_timeout};
use super::{IDLE_TTL, SWEEP_EVERY, migrate_tenant_database, template_name, tenant_db_name};
use crate::clock::Clock;
use crate::ids::TenantId;
use crate::store::data::TenantData;
use crate::store::postgres::{
    DATA_SCHEMA, PgDatabase, check_identifier, drop_database, ensure_database, pg_error,
    runtime_options, runtime_pool, tenant_tx,
};
use crate::store::{StoreError, StoreResult};
use crate::{Isolation, Tenant};
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore};

/// One server's share: its database (shared tier), the template of its
/// dedicated tenants' databases, and the registry of their pools.
pub(super) struct PgServer {
    db: PgDatabase,
    template: String,
    pub(super) registry: Arc<Registry>,
}

impl PgServer {
    pub(super) async fn open(
        db: &PgDatabase,
        max_connections: u32,
        per_tenant: u32,
    ) -> StoreResult<Self> {
        let template = template_name(&db.name);
        check_identifier(&template)?;
        ensure_database(&db.admin_options, &template, None).await?;
        // The template is ours alone: always brought up to date.
        migrate_tenant_database(db, &template, "the template database").await?;

        let cap = max_connections.max(1);
        let registry = Arc::new(Registry {
            slots: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(cap as usize)),
            cap,
            per_pool: per_tenant.clamp(1, cap),
            open: Arc::new(AtomicU64::new(0)),
            epoch: Instant::now(),
            acquire_timeout: db.settings.acquire_timeout,
        });
        let weak = Arc::downgrade(&registry);
        tokio::spawn(sweep_idle(weak));
        Ok(Self {
            db: db.clone(),
            template,
            registry,
        })
    }

    pub(super) fn db_name(&self, tenant: TenantId) -> String {
        tenant_db_name(&self.db.name, tenant)
    }

    pub(super) async fn dedicated_entry(&self, tenant: TenantId) -> StoreResult<Arc<PoolEntry>> {
        let name = self.db_name(tenant);
        check_identifier(&name)?;
        let options = runtime_options(&self.db.admin_options, &self.db.settings, &name);
        let settings = self.db.settings.clone();
        self.registry
            .get(tenant, move |n| runtime_pool(options, n, &settings))
            .await
    }
}

/// How often a caller waiting for permits evicts idle pools again.
const EVICT_EVERY: Duration = Duration::from_millis(50);

/// The dedicated pools, by tenant.
pub(super) struct Registry {
    slots: Mutex<HashMap<TenantId, Arc<Slot>>>,
    /// One permit per connection any pool entry may hold.
    permits: Arc<Semaphore>,
    cap: u32,
    per_pool: u32,
    /// Pool entries not yet closed.
    pub(super) open: Arc<AtomicU64>,
    epoch: Instant,
    acquire_timeout: Duration,
}

pub(super) struct Slot {
    entry: OnceCell<Arc<PoolEntry>>,
    /// Milliseconds since the registry's epoch.
    last_used: AtomicU64,
}

/// A tenant's pool and the permits for its connections. Handles hold the
/// entry, never the bare pool, so the permits come back only once the last
/// handle is gone and the pool's connections are closed.
pub(super) struct PoolEntry {
    pub(super) pool: PgPool,
    permit: Option<OwnedSemaphorePermit>,
    open: Arc<AtomicU64>,
}

impl Drop for PoolEntry {
    fn drop(&mut self) {
        let pool = self.pool.clone();
        let permit = self.permit.take();
        let open = self.open.clone();
        let close = async move {
            pool.close().await;
            drop(permit);
            open.fetch_sub(1, Ordering::SeqCst);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(close);
            }
            // No runtime left: dropping the pool drops its connections.
            Err(_) => {
                self.open.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

impl Registry {
    pub(super) fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub(super) async fn get(
        &self,
        tenant: TenantId,
        make_pool: impl FnOnce(u32) -> PgPool,
    ) -> StoreResult<Arc<PoolEntry>> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            let slot = slots
                .entry(tenant)
                .or_insert_with(|| {
                    Arc::new(Slot {
                        entry: OnceCell::new(),
                        last_used: AtomicU64::new(0),
                    })
                })
                .clone();
            slot.last_used.store(self.now(), Ordering::Relaxed);
            slot
        };
        // One deadline for this caller, however many failed initialisations
        // of the same slot queue ahead of it.
        let deadline = tokio::time::Instant::now() + self.acquire_timeout;
        slot.entry
            .get_or_try_init(|| async {
                let permit = self.permits(tenant, deadline).await?;
                self.open.fetch_add(1, Ordering::SeqCst);
                Ok(Arc::new(PoolEntry {
                    pool: make_pool(self.per_pool),
                    permit: Some(permit),
                    open: self.open.clone(),
                }))
            })
            .await
            .cloned()
    }

    /// Permits for a new pool: when short, evicts the least recently used
    /// pools and waits (bounded) for them to be closed. The wait keeps its
    /// place in the semaphore's queue, so callers get permits in the order
    /// they asked (a caller that left and rejoined the queue on every
    /// retry could be overtaken until its deadline, then fail). Eviction is
    /// redone while waiting: pools opened meanwhile by others stay in the
    /// registry after their requests are done, holding permits until evicted.
    pub(super) async fn permits(
        &self,
        tenant: TenantId,
        deadline: tokio::time::Instant,
    ) -> StoreResult<OwnedSemaphorePermit> {
        if let Ok(permit) = self.permits.clone().try_acquire_many_owned(self.per_pool) {
            return Ok(permit);
        }
        let acquire = self.permits.clone().acquire_many_owned(self.per_pool);
        tokio::pin!(acquire);
        loop {
            self.evict_for(tenant);
            let next_look = (tokio::time::Instant::now() + EVICT_EVERY).min(deadline);
            tokio::select! {
                biased;
                permit = &mut acquire => {
                    return permit.map_err(|_| {
                        StoreError::Unavailable("the dedicated tier is closed".into())
                    });
                }
                () = tokio::time::sleep_until(next_look) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(StoreError::Unavailable(
                            "every connection for dedicated tenant databases is in use".into(),
                        ));
                    }
                }
            }
        }
    }

    /// Forgets pools, least recently used first, until those left leave
    /// room for one more. Pools still in use close when their users are done.
    pub(super) fn evict_for(&self, tenant: TenantId) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let mut held: Vec<(u64, TenantId)> = slots
            .iter()
            .filter(|(t, s)| **t != tenant && s.entry.initialized())
            .map(|(t, s)| (s.last_used.load(Ordering::Relaxed), *t))
            .collect();
        held.sort_unstable();
        let max_held = (self.cap / self.per_pool).saturating_sub(1) as usize;
        let excess = held.len().saturating_sub(max_held);
        for (_, t) in held.into_iter().take(excess) {
            slots.remove(&t);
        }
    }

    pub(super) fn sweep(&self) {
        let now = self.now();
        let ttl = IDLE_TTL.as_millis() as u64;
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.retain(|_, s| now.saturating_sub(s.last_used.load(Ordering::Relaxed)) < ttl);
    }

    pub(super) fn remove(&self, tenant: TenantId) -> Option<Arc<Slot>> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.remove(&tenant)
    }
}

pub(super) async fn sweep_idle(registry: Weak<Registry>) {
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        match registry.upgrade() {
            Some(registry) => registry.sweep(),
            None => return,
        }
    }
}

/// The data plane's operations on this server.
impl PgServer {
    pub(super) async fn provision(&self, tenant: &Tenant) -> StoreResult<()> {
        let entry;
        let pool = match tenant.isolation {
            Isolation::Shared => &self.db.runtime,
            Isolation::Dedicated => {
                let name = self.db_name(tenant.id);
                ensure_database(&self.db.admin_options, &name, Some(&self.template)).await?;
                entry = self.dedicated_entry(tenant.id).await?;
                &entry.pool
            }
        };
        // The mark that the tenant's data lives here (see `lock_usage`),
        // written through the runtime role: it also proves the role gets in.
        let mut tx = tenant_tx(pool, tenant.id).await?;
        sqlx::query(&format!(
            "INSERT INTO {DATA_SCHEMA}.usage (tenant_id) VALUES ($1) ON CONFLICT (tenant_id) DO NOTHING"
        ))
        .bind(tenant.id.0)
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)
    }

    pub(super) async fn migrate_tenant(&self, tenant: &Tenant) -> StoreResult<()> {
        if tenant.isolation != Isolation::Dedicated {
            return Ok(());
        }
        let name = self.db_name(tenant.id);
        check_identifier(&name)?;
        let what = format!("tenant {}'s database", tenant.slug);
        migrate_tenant_database(&self.db, &name, &what).await
    }

    pub(super) async fn handle(
        &self,
        tenant: &Tenant,
        clock: Arc<dyn Clock>,
    ) -> StoreResult<Arc<dyn TenantData>> {
        let backend = match tenant.isolation {
            Isolation::Shared => Backend::Shared {
                pool: self.db.runtime.clone(),
                admin: self.db.admin.clone(),
            },
            Isolation::Dedicated => Backend::Dedicated {
                entry: self.dedicated_entry(tenant.id).await?,
                admin: Box::new(
                    self.db
                        .admin_options
                        .clone()
                        .database(&self.db_name(tenant.id)),
                ),
            },
        };
        Ok(Arc::new(PgTenantData {
            backend,
            tenant: tenant.id,
            restored: AtomicU64::new(0),
            clock,
        }))
    }

    pub(super) async fn purge(&self, tenant: &Tenant) -> StoreResult<()> {
        match tenant.isolation {
            Isolation::Shared => {
                let mut tx = tenant_tx(&self.db.runtime, tenant.id).await?;
                without_statement_timeout(&mut tx).await?;
                // Writers lock the usage row first; so does the purge, so an
                // in-flight write and the purge queue instead of deadlocking.
                for table in ["usage", "record_uniques", "records", "collections"] {
                    sqlx::query(&format!(
                        "DELETE FROM {DATA_SCHEMA}.{table} WHERE tenant_id = $1"
                    ))
                    .bind(tenant.id.0)
                    .execute(&mut *tx)
                    .await
                    .map_err(pg_error)?;
                }
                tx.commit().await.map_err(pg_error)
            }
            Isolation::Dedicated => {
                if let Some(entry) = self
                    .registry
                    .remove(tenant.id)
                    .and_then(|slot| slot.entry.get().cloned())
                {
                    entry.pool.close().await;
                }
                drop_database(&self.db.admin_options, &self.db_name(tenant.id)).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(cap: u32) -> Arc<Registry> {
        Arc::new(Registry {
            slots: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(cap as usize)),
            cap,
            per_pool: 1,
            open: Arc::new(AtomicU64::new(0)),
            epoch: Instant::now(),
            acquire_timeout: Duration::from_secs(10),
        })
    }

    /// A caller that has waited longest is served first: a newcomer that
    /// arrives while it waits does not overtake it (a waiter that left and
    /// rejoined the queue every `EVICT_EVERY` would be overtaken, and could
    /// be again and again until its deadline).
    #[tokio::test(start_paused = true)]
    async fn waiting_callers_get_permits_in_the_order_they_asked() {
        let registry = registry(1);
        let held = registry
            .permits
            .clone()
            .try_acquire_owned()
            .expect("the one permit");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let ask = || {
            let registry = registry.clone();
            tokio::spawn(async move { registry.permits(TenantId::new(), deadline).await })
        };
        let first = ask();
        tokio::time::sleep(EVICT_EVERY + EVICT_EVERY / 2).await;
        let second = ask();
        tokio::time::sleep(EVICT_EVERY * 2 / 3).await;
        drop(held);

        let permit = first
            .await
            .expect("task")
            .expect("the first caller's permit");
        tokio::time::sleep(EVICT_EVERY).await;
        assert!(!second.is_finished(), "the second caller waits its turn");
        drop(permit);
        let permit = second
            .await
            .expect("task")
            .expect("the second caller's permit");
        drop(permit);
    }
}
