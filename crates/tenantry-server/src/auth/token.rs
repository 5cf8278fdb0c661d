//! HS256 access tokens with checked issuer and audience.

use crate::error::{Error, Result};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tenantry::cache::TtlCache;
use tenantry::clock::Clock;
use tenantry::{OrgId, Principal, Role, TenantId, UserId};
use uuid::Uuid;

pub const ISSUER: &str = "tenantry";
pub const AUDIENCE: &str = "tenantry-api";

/// Claims of an access token (API.md "Auth").
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<String>,
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
    pub aud: String,
    pub jti: String,
}

/// Signs and verifies access tokens with the secret from the data dir.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// Tokens already verified → (principal, expiry). A client sends the same
    /// token with every request; decoding and checking it again (base64, two
    /// JSON parses, an HMAC) was 7% of a GET-by-id's CPU. Keyed by the whole
    /// token, signature included: only the exact bytes once verified hit.
    verified: TtlCache<String, (Principal, i64)>,
    /// Issue and expiry times are this clock's, not the system's, so a
    /// test can move a session past its end.
    clock: Arc<dyn Clock>,
}

impl TokenKeys {
    pub fn new(secret: &[u8], clock: Arc<dyn Clock>) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        // Expiry is judged below on the injected clock (jsonwebtoken reads
        // the system's), with no grace period: tenants may ask for very
        // short sessions.
        validation.validate_exp = false;
        validation.leeway = 0;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            verified: TtlCache::new(10_000, std::time::Duration::from_secs(60)),
            clock,
        }
    }

    /// Issues a token for `principal` valid for `lifetime_secs`.
    pub fn issue(&self, principal: &Principal, lifetime_secs: u64) -> Result<String> {
        let now = self.clock.now().timestamp();
        let claims = Claims {
            sub: principal.user_id.to_string(),
            tid: principal.tenant_id.map(|t| t.to_string()),
            role: principal.role.as_str().to_owned(),
            org: principal.org_id.map(|o| o.to_string()),
            iat: now,
            exp: now.saturating_add(i64::try_from(lifetime_secs).unwrap_or(i64::MAX)),
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            jti: Uuid::now_v7().to_string(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| Error::Internal(format!("signing token: {e}")))
    }

    /// Verifies signature, algorithm, issuer, audience and expiry.
    pub fn verify(&self, token: &str) -> Result<Principal> {
        let now = self.clock.now().timestamp();
        if let Some((principal, exp)) = self.verified.get(token) {
            return if exp >= now {
                Ok(principal)
            } else {
                Err(Error::Unauthorized)
            };
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| Error::Unauthorized)?;
        let c = data.claims;
        if c.exp < now {
            return Err(Error::Unauthorized);
        }
        let parse = |s: &str| s.parse::<Uuid>().map_err(|_| Error::Unauthorized);
        let principal = Principal {
            user_id: UserId(parse(&c.sub)?),
            role: Role::parse(&c.role).ok_or(Error::Unauthorized)?,
            tenant_id: c.tid.as_deref().map(parse).transpose()?.map(TenantId),
            org_id: c.org.as_deref().map(parse).transpose()?.map(OrgId),
        };
        self.verified
            .insert(token.to_owned(), (principal.clone(), c.exp));
        Ok(principal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use chrono::Utc;
    use tenantry::clock::{ManualClock, SystemClock};

    fn keys_of(secret: &[u8]) -> TokenKeys {
        TokenKeys::new(secret, Arc::new(SystemClock))
    }

    fn principal() -> Principal {
        Principal {
            user_id: UserId::new(),
            role: Role::SuperAdmin,
            tenant_id: None,
            org_id: None,
        }
    }

    fn forge(header: &str, claims: &Claims) -> String {
        let h = URL_SAFE_NO_PAD.encode(header);
        let c = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims"));
        format!("{h}.{c}.")
    }

    fn claims(iss: &str, aud: &str, exp_offset: i64) -> Claims {
        let now = Utc::now().timestamp();
        Claims {
            sub: UserId::new().to_string(),
            tid: None,
            role: "super_admin".into(),
            org: None,
            iat: now,
            exp: now + exp_offset,
            iss: iss.into(),
            aud: aud.into(),
            jti: "x".into(),
        }
    }

    #[test]
    fn issued_tokens_verify_to_the_same_principal() {
        let keys = keys_of(b"secret-secret-secret-secret-1234");
        let p = principal();
        let token = keys.issue(&p, 60).expect("issue");
        assert_eq!(keys.verify(&token).expect("verify"), p);
    }

    #[test]
    fn a_verified_token_still_expires() {
        let keys = keys_of(b"secret-secret-secret-secret-1234");
        let p = principal();
        let token = keys.issue(&p, 60).expect("issue");
        assert_eq!(keys.verify(&token).expect("verify"), p);
        // Its cached verdict, as it will be once the minute has passed.
        keys.verified
            .insert(token.clone(), (p, Utc::now().timestamp() - 1));
        assert!(matches!(keys.verify(&token), Err(Error::Unauthorized)));
    }

    #[test]
    fn tokens_expire_on_the_injected_clock() {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let keys = TokenKeys::new(b"secret-secret-secret-secret-1234", clock.clone());
        let p = principal();
        let token = keys.issue(&p, 60).expect("issue");
        let fresh = keys.issue(&p, 60).expect("issue");
        assert_eq!(keys.verify(&token).expect("verify"), p);
        clock.advance(chrono::Duration::seconds(61));
        // Refused whether its verdict was cached or not.
        assert!(matches!(keys.verify(&token), Err(Error::Unauthorized)));
        assert!(matches!(keys.verify(&fresh), Err(Error::Unauthorized)));
    }

    #[test]
    fn bad_tokens_are_refused() {
        let keys = keys_of(b"secret-secret-secret-secret-1234");
        let other = keys_of(b"another-secret-another-secret-12");
        let sign = |c: &Claims| {
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                c,
                &EncodingKey::from_secret(b"secret-secret-secret-secret-1234"),
            )
            .expect("sign")
        };
        let cases = [
            (
                "alg none",
                forge(
                    r#"{"alg":"none","typ":"JWT"}"#,
                    &claims(ISSUER, AUDIENCE, 60),
                ),
            ),
            (
                "bad signature",
                other.issue(&principal(), 60).expect("issue"),
            ),
            ("wrong issuer", sign(&claims("someone-else", AUDIENCE, 60))),
            ("wrong audience", sign(&claims(ISSUER, "other-api", 60))),
            ("expired", sign(&claims(ISSUER, AUDIENCE, -5))),
            (
                "HS512",
                jsonwebtoken::encode(
                    &Header::new(Algorithm::HS512),
                    &claims(ISSUER, AUDIENCE, 60),
                    &EncodingKey::from_secret(b"secret-secret-secret-secret-1234"),
                )
                .expect("sign"),
            ),
            ("garbage", "not.a.token".to_owned()),
        ];
        for (what, token) in cases {
            assert!(
                matches!(keys.verify(&token), Err(Error::Unauthorized)),
                "{what} was accepted"
            );
        }
    }
}
