//! argon2id password hashing, off the async executor.

use crate::error::{Error, Result};
use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::{Semaphore, SemaphorePermit};

/// Each hash takes ~19 MiB and a core for tens of milliseconds. Running no
/// more at once than there are cores bounds memory (unbounded blocking
/// threads each kept their own allocator arena: gigabytes under a login
/// burst) and keeps a flood of logins from starving other work. The queue
/// behind them is bounded too: past it a login is refused at once (503 with
/// Retry-After) instead of waiting its turn behind thousands.
static HASHING: LazyLock<Limiter> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    Limiter::new(cores, cores * QUEUED_PER_CORE)
});

/// Hashes that may wait per core (each waits ~50 ms per hash ahead of it).
const QUEUED_PER_CORE: usize = 32;

struct Limiter {
    running: Semaphore,
    waiting: AtomicUsize,
    max_waiting: usize,
}

impl Limiter {
    fn new(parallel: usize, max_waiting: usize) -> Self {
        Self {
            running: Semaphore::new(parallel),
            waiting: AtomicUsize::new(0),
            max_waiting,
        }
    }

    async fn permit(&self) -> Result<SemaphorePermit<'_>> {
        if let Ok(permit) = self.running.try_acquire() {
            return Ok(permit);
        }
        // Counted while waiting, uncounted however the wait ends (the
        // request may be dropped mid-wait).
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        let ahead = self.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&self.waiting);
        if ahead >= self.max_waiting {
            return Err(Error::Unavailable(
                "too many password checks queued; retry shortly".into(),
            ));
        }
        self.running
            .acquire()
            .await
            .map_err(|e| Error::Internal(format!("hashing limiter closed: {e}")))
    }
}

async fn run_limited<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let _permit = HASHING.permit().await?;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Internal(format!("hashing task: {e}")))
}

/// A hash verified when the account does not exist, so that an unknown email
/// costs the same time as a wrong password and timing reveals nothing.
static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| hash_blocking("tenantry-timing-equaliser").unwrap_or_default());

fn hash_blocking(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("hashing password: {e}")))
}

fn verify_blocking(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

pub async fn hash(password: String) -> Result<String> {
    run_limited(move || hash_blocking(&password)).await?
}

/// Verifies `password` against `hash`, or against a dummy hash when there is
/// no account; false in that case whatever the password.
pub async fn verify(password: String, hash: Option<String>) -> Result<bool> {
    run_limited(move || match hash {
        Some(hash) => verify_blocking(&password, &hash),
        None => {
            verify_blocking(&password, &DUMMY_HASH);
            false
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_and_verify() {
        let h = hash("Correct-Horse-1".into()).await.expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(
            verify("Correct-Horse-1".into(), Some(h.clone()))
                .await
                .expect("verify")
        );
        assert!(!verify("wrong".into(), Some(h)).await.expect("verify"));
        assert!(!verify("anything".into(), None).await.expect("verify"));
    }

    /// One running, two waiting: the fourth is refused at once with a 503,
    /// and a waiter that gives up frees its place in the queue.
    #[tokio::test]
    async fn the_queue_behind_the_hashes_is_bounded() {
        let limiter = std::sync::Arc::new(Limiter::new(1, 2));
        let running = limiter.permit().await.expect("first runs");
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let limiter = limiter.clone();
                tokio::spawn(async move { limiter.permit().await.map(|_| ()) })
            })
            .collect();
        while limiter.waiting.load(Ordering::Relaxed) < 2 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(limiter.permit().await, Err(Error::Unavailable(_))));
        waiters[0].abort();
        while limiter.waiting.load(Ordering::Relaxed) > 1 {
            tokio::task::yield_now().await;
        }
        let again = limiter.clone();
        let queued = tokio::spawn(async move { again.permit().await.map(|_| ()) });
        drop(running);
        queued
            .await
            .expect("task")
            .expect("admitted once there was room");
        for w in waiters.into_iter().skip(1) {
            w.await.expect("task").expect("the other waiter runs");
        }
    }
}
