//! Secrets kept in the data dir and the envelope encryption built on them.
//!
//! The master key wraps one data key per tenant; the data key seals that
//! tenant's encrypted config values. Both use AES-256-GCM, with the tenant id
//! (and config key) as associated data, so a sealed value copied to another
//! tenant or key does not open.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;
use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use tenantry::TenantId;
use zeroize::Zeroizing;

pub const JWT_SECRET_FILE: &str = "jwt.secret";
pub const MASTER_KEY_FILE: &str = "master.key";
const NONCE_LEN: usize = 12;

/// Reads a key file, or creates it (mode 0600) with `len` random bytes.
pub fn load_or_create(dir: &Path, name: &str, len: usize) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let path = dir.join(name);
    let mut fresh = Zeroizing::new(vec![0u8; len]);
    rand::thread_rng().fill_bytes(&mut fresh);
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(mut file) => {
            file.write_all(&fresh)
                .and_then(|_| file.sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(fresh)
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            // As ssh does with private keys: a key others may read is
            // refused, not used (it may already have leaked).
            let mode = std::fs::metadata(&path)
                .with_context(|| format!("reading {}", path.display()))?
                .permissions()
                .mode();
            anyhow::ensure!(
                mode & 0o077 == 0,
                "{} is readable by other users (mode {:o}); run `chmod 600 {}`",
                path.display(),
                mode & 0o777,
                path.display()
            );
            let existing = Zeroizing::new(
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
            );
            anyhow::ensure!(
                existing.len() == len,
                "{} holds {} bytes, expected {len}",
                path.display(),
                existing.len()
            );
            Ok(existing)
        }
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("decryption failed")]
pub struct CryptoError;

fn seal_with(cipher: &Aes256Gcm, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let mut out = nonce.to_vec();
    // Encryption with a fresh nonce and in-memory buffers cannot fail.
    out.extend(
        cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .unwrap_or_default(),
    );
    out
}

fn open_with(
    cipher: &Aes256Gcm,
    aad: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if sealed.len() < NONCE_LEN {
        return Err(CryptoError);
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
        .map(Zeroizing::new)
        .map_err(|_| CryptoError)
}

/// The master key and the operations that use it.
pub struct Keyring {
    master: Aes256Gcm,
}

impl Keyring {
    pub fn new(master_key: &[u8]) -> anyhow::Result<Self> {
        anyhow::ensure!(master_key.len() == 32, "master key must be 32 bytes");
        Ok(Self {
            master: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(master_key)),
        })
    }

    /// A fresh data key for a new tenant, wrapped by the master key.
    pub fn new_wrapped_data_key(&self, tenant: TenantId) -> Vec<u8> {
        let mut dek = Zeroizing::new([0u8; 32]);
        rand::thread_rng().fill_bytes(dek.as_mut());
        seal_with(&self.master, tenant.0.as_bytes(), dek.as_ref())
    }

    fn data_cipher(&self, tenant: TenantId, wrapped: &[u8]) -> Result<Aes256Gcm, CryptoError> {
        let dek = open_with(&self.master, tenant.0.as_bytes(), wrapped)?;
        Aes256Gcm::new_from_slice(&dek).map_err(|_| CryptoError)
    }

    /// Seals a config value under the tenant's data key; base64 text.
    pub fn seal_value(
        &self,
        tenant: TenantId,
        wrapped: &[u8],
        key: &str,
        plaintext: &[u8],
    ) -> Result<String, CryptoError> {
        let cipher = self.data_cipher(tenant, wrapped)?;
        Ok(STANDARD.encode(seal_with(&cipher, &aad(tenant, key), plaintext)))
    }

    pub fn open_value(
        &self,
        tenant: TenantId,
        wrapped: &[u8],
        key: &str,
        sealed_b64: &str,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let cipher = self.data_cipher(tenant, wrapped)?;
        let sealed = STANDARD.decode(sealed_b64).map_err(|_| CryptoError)?;
        open_with(&cipher, &aad(tenant, key), &sealed)
    }
}

fn aad(tenant: TenantId, key: &str) -> Vec<u8> {
    let mut aad = tenant.0.as_bytes().to_vec();
    aad.extend_from_slice(key.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_are_created_once_with_mode_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = load_or_create(dir.path(), "k", 32).expect("create");
        let again = load_or_create(dir.path(), "k", 32).expect("read");
        assert_eq!(*first, *again);
        let mode = std::fs::metadata(dir.path().join("k"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_key_file_others_may_read_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        load_or_create(dir.path(), "k", 32).expect("create");
        let path = dir.path().join("k");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let refused = load_or_create(dir.path(), "k", 32).expect_err("refused");
        assert!(refused.to_string().contains("chmod 600"), "{refused}");
    }

    #[test]
    fn sealed_values_open_only_for_their_tenant_and_key() {
        let ring = Keyring::new(&[7u8; 32]).expect("ring");
        let (a, b) = (TenantId::new(), TenantId::new());
        let wrapped_a = ring.new_wrapped_data_key(a);
        let sealed = ring
            .seal_value(a, &wrapped_a, "smtp.password", b"hunter2")
            .expect("seal");
        assert!(!sealed.contains("hunter2"));
        assert_eq!(
            &*ring
                .open_value(a, &wrapped_a, "smtp.password", &sealed)
                .expect("open"),
            b"hunter2"
        );
        assert!(
            ring.open_value(a, &wrapped_a, "other.key", &sealed)
                .is_err()
        );
        assert!(
            ring.open_value(b, &wrapped_a, "smtp.password", &sealed)
                .is_err()
        );
        let other_ring = Keyring::new(&[8u8; 32]).expect("ring");
        assert!(
            other_ring
                .open_value(a, &wrapped_a, "smtp.password", &sealed)
                .is_err()
        );
    }
}
