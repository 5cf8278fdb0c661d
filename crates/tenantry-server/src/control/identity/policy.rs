//! The effective password policy of a tenant, applied wherever a password is set.

use crate::control::Identity;
use crate::error::{Error, Result};
use serde_json::Value;
use tenantry::Tenant;

/// Checks `password` against a `security.password_policy` object; the error
/// names the first rule that failed.
pub fn check_password(policy: &Value, password: &str) -> Result<()> {
    let flag = |name: &str| policy.get(name).and_then(Value::as_bool).unwrap_or(false);
    let min = policy
        .get("min_length")
        .and_then(Value::as_u64)
        .unwrap_or(8);
    let rules: [(bool, String); 5] = [
        (
            password.chars().count() as u64 >= min,
            format!("must be at least {min} characters long"),
        ),
        (
            !flag("require_uppercase") || password.chars().any(char::is_uppercase),
            "must contain an uppercase letter".into(),
        ),
        (
            !flag("require_lowercase") || password.chars().any(char::is_lowercase),
            "must contain a lowercase letter".into(),
        ),
        (
            !flag("require_numbers") || password.chars().any(|c| c.is_ascii_digit()),
            "must contain a digit".into(),
        ),
        (
            !flag("require_special_chars") || password.chars().any(|c| !c.is_alphanumeric()),
            "must contain a special character".into(),
        ),
    ];
    match rules.into_iter().find(|(ok, _)| !ok) {
        Some((_, message)) => Err(Error::invalid("password", message)),
        None => Ok(()),
    }
}

impl Identity {
    /// Applies the tenant's effective password policy.
    pub async fn check_tenant_password(&self, tenant: &Tenant, password: &str) -> Result<()> {
        let config = self.core.effective_config(tenant).await?;
        let policy = config
            .get("security.password_policy")
            .cloned()
            .unwrap_or(Value::Null);
        check_password(&policy, password)
    }

    /// The tenant's access-token lifetime (`session.timeout`, 1 s to a day;
    /// a value stored before the upper bound existed is held to it).
    pub async fn session_timeout(&self, tenant: &Tenant) -> Result<u64> {
        let config = self.core.effective_config(tenant).await?;
        Ok(config
            .get("session.timeout")
            .and_then(Value::as_u64)
            .unwrap_or(3600)
            .clamp(1, crate::control::tenants::config::MAX_SESSION_TIMEOUT_SECS))
    }

    pub async fn config_flag(&self, tenant: &Tenant, key: &str) -> Result<bool> {
        let config = self.core.effective_config(tenant).await?;
        Ok(config.get(key).and_then(Value::as_bool).unwrap_or(false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_rule_is_named_when_it_fails() {
        let policy = json!({"min_length": 10, "require_uppercase": true, "require_lowercase": true,
                            "require_numbers": true, "require_special_chars": true});
        let message = |pw: &str| match check_password(&policy, pw) {
            Err(Error::Validation(errors)) => {
                assert_eq!(errors[0].field, "password");
                errors[0].message.clone()
            }
            other => panic!("expected a validation error, got {other:?}"),
        };
        assert!(message("Sh0rt!").contains("at least 10"));
        assert!(message("no-upper-case-1").contains("uppercase"));
        assert!(message("NO-LOWER-CASE-1").contains("lowercase"));
        assert!(message("No-Digits-Here").contains("digit"));
        assert!(message("NoSpecials123").contains("special"));
        assert!(check_password(&policy, "Good-Passw0rd").is_ok());
        assert!(check_password(&json!({"min_length": 4}), "abcd").is_ok());
    }
}
