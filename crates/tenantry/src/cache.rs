//! A bounded cache whose entries expire a fixed time after insertion, for
//! the lookups every request repeats (tenants, users, plans, collections).
//!
//! quick_cache underneath: a hit is one hash and a read lock on one shard.
//! moka, used before, did bookkeeping on every read (access queues, periodic
//! housekeeping) that profiles showed as 15% of a GET-by-id's CPU across the
//! half dozen lookups a request makes.

use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct TtlCache<K, V> {
    entries: quick_cache::sync::Cache<K, (V, Instant)>,
    ttl: Duration,
    /// Bumped by every invalidation, so a load that started before one does
    /// not put back what was just invalidated.
    generation: AtomicU64,
}

impl<K: Eq + Hash + Clone, V: Clone> TtlCache<K, V> {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            entries: quick_cache::sync::Cache::new(capacity.max(1)),
            ttl,
            generation: AtomicU64::new(0),
        }
    }

    fn fresh(&self, (value, at): (V, Instant)) -> Option<V> {
        (at.elapsed() < self.ttl).then_some(value)
    }

    /// The live entry for `key` (a `&str` for a `String` key, say).
    pub fn get<Q: Hash + quick_cache::Equivalent<K> + ?Sized>(&self, key: &Q) -> Option<V> {
        self.entries.get(key).and_then(|e| self.fresh(e))
    }

    pub fn insert(&self, key: K, value: V) {
        self.entries.insert(key, (value, Instant::now()));
    }

    pub fn invalidate(&self, key: &K) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.entries.remove(key);
    }

    pub fn invalidate_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.entries.clear();
    }

    /// The cached value, or the one `load` produces (cached if Ok).
    /// Concurrent misses each load: waiting on one another's load instead
    /// would, while the store is down, turn N requests failing at once after
    /// the acquire timeout into N timeouts served one after another.
    pub async fn get_or_try_insert_with<Q, E>(
        &self,
        key: &Q,
        load: impl Future<Output = Result<V, E>>,
    ) -> Result<V, E>
    where
        Q: Hash + quick_cache::Equivalent<K> + ToOwned<Owned = K> + ?Sized,
    {
        if let Some(v) = self.get(key) {
            return Ok(v);
        }
        let generation = self.generation.load(Ordering::Acquire);
        let value = load.await?;
        if self.generation.load(Ordering::Acquire) == generation {
            self.insert(key.to_owned(), value.clone());
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn entries_expire_and_invalidation_wins_over_a_load_in_flight() {
        let cache = TtlCache::new(10, Duration::from_millis(50));
        let v = cache
            .get_or_try_insert_with(&1, async { Ok::<_, ()>("a") })
            .await;
        assert_eq!(v, Ok("a"));
        // Cached: the loader is not called again.
        let v = cache
            .get_or_try_insert_with(&1, async { Ok::<_, ()>("b") })
            .await;
        assert_eq!(v, Ok("a"));
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(cache.get(&1), None, "expired");
        let v = cache
            .get_or_try_insert_with(&1, async { Ok::<_, ()>("c") })
            .await;
        assert_eq!(v, Ok("c"));

        // Errors are not cached.
        assert_eq!(
            cache
                .get_or_try_insert_with(&2, async { Err("down") })
                .await,
            Err("down")
        );
        assert_eq!(cache.get(&2), None);

        // Invalidated while loading: the loaded value is returned, not kept.
        let v = cache
            .get_or_try_insert_with(&3, async {
                cache.invalidate_all();
                Ok::<_, ()>("stale")
            })
            .await;
        assert_eq!(v, Ok("stale"));
        assert_eq!(cache.get(&3), None);
    }

    /// Misses of one key load side by side: each load here waits until all
    /// four have started, which never happens if they queue behind one.
    #[tokio::test]
    async fn concurrent_misses_do_not_queue_behind_one_load() {
        let cache: TtlCache<u32, u32> = TtlCache::new(10, Duration::from_secs(60));
        let barrier = tokio::sync::Barrier::new(4);
        let loads = (0..4).map(|_| {
            cache.get_or_try_insert_with(&7, async {
                barrier.wait().await;
                Err::<u32, _>("store down")
            })
        });
        let results =
            tokio::time::timeout(Duration::from_secs(10), futures::future::join_all(loads))
                .await
                .expect("loads ran side by side");
        assert!(results.iter().all(|r| *r == Err("store down")));
    }
}
