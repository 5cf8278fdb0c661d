//! One-time codes for phone login: generated, hashed at rest, delivered by a sender.

use crate::error::{Error, Result};
use hmac::{Hmac, Mac};
use rand::Rng;
use serde_json::json;
use sha2::Sha256;
use tenantry::TenantId;

/// How codes reach the phone's owner.
pub enum OtpSender {
    /// Prints the code to the log (development).
    Log,
    /// POSTs `{tenant, phone, code}` to a URL (an SMS gateway adapter).
    Webhook {
        url: String,
        client: reqwest::Client,
    },
}

impl OtpSender {
    pub fn from_settings(kind: &str, url: Option<&str>) -> anyhow::Result<Self> {
        match (kind, url) {
            ("log", _) => Ok(OtpSender::Log),
            ("webhook", Some(url)) => Ok(OtpSender::Webhook {
                url: url.to_owned(),
                client: reqwest::Client::builder()
                    .timeout(std::time::Duration::from_secs(10))
                    .build()?,
            }),
            ("webhook", None) => {
                anyhow::bail!("TENANTRY_OTP_SENDER=webhook needs TENANTRY_OTP_WEBHOOK_URL")
            }
            (other, _) => anyhow::bail!("unknown OTP sender `{other}` (use log or webhook)"),
        }
    }

    pub async fn send(&self, tenant_slug: &str, phone: &str, code: &str) -> Result<()> {
        match self {
            OtpSender::Log => {
                tracing::info!(tenant = tenant_slug, phone, code, "OTP code (log sender)");
                Ok(())
            }
            OtpSender::Webhook { url, client } => {
                let res = client
                    .post(url)
                    .json(&json!({"tenant": tenant_slug, "phone": phone, "code": code}))
                    .send()
                    .await
                    .map_err(|e| Error::Unavailable(format!("OTP webhook: {e}")))?;
                if res.status().is_success() {
                    Ok(())
                } else {
                    Err(Error::Unavailable(format!(
                        "OTP webhook answered {}",
                        res.status()
                    )))
                }
            }
        }
    }
}

/// A six-digit code.
pub fn new_code() -> String {
    format!("{:06}", rand::thread_rng().gen_range(0..1_000_000))
}

/// Keyed hash of a code: a leaked table does not reveal codes, and the key
/// (derived from a server secret) stops offline guessing of the 10^6 space.
pub fn hash_code(key: &[u8], tenant: TenantId, phone: &str, code: &str) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(tenant.0.as_bytes());
    mac.update(phone.as_bytes());
    mac.update(b"\0");
    mac.update(code.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_six_digits_and_hashes_bind_tenant_and_phone() {
        let code = new_code();
        assert_eq!(code.len(), 6);
        assert!(code.bytes().all(|b| b.is_ascii_digit()));
        let (a, b) = (TenantId::new(), TenantId::new());
        let h = hash_code(b"k", a, "+15550001", &code);
        assert_eq!(h, hash_code(b"k", a, "+15550001", &code));
        assert_ne!(h, hash_code(b"k", b, "+15550001", &code));
        assert_ne!(h, hash_code(b"k", a, "+15550002", &code));
        assert!(!h.contains(&code));
    }
}
