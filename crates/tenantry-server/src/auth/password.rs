//! argon2id password hashing, off the async executor.

use crate::error::{Error, Result};
use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use std::sync::LazyLock;
use tokio::sync::Semaphore;

/// Each hash takes ~19 MiB and a core for tens of milliseconds. Running no
/// more at once than there are cores bounds memory (unbounded blocking
/// threads each kept their own allocator arena: gigabytes under a login
/// burst) and keeps a flood of logins from starving other work.
static HASHING: LazyLock<Semaphore> =
    LazyLock::new(|| Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())));

async fn run_limited<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let _permit = HASHING
        .acquire()
        .await
        .map_err(|e| Error::Internal(format!("hashing limiter closed: {e}")))?;
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
}
