//! Per-tenant configuration (plain or encrypted), effective configuration
//! over the plan's defaults, feature flags and branding.

use crate::control::{Tenants, audit_entry};
use crate::error::{Error, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use tenantry::store::ConfigEntry;
use tenantry::{Principal, Role, Tenant};

/// Config keys that override the plan itself (feature flags).
const STAFF_ONLY_KEYS: &[&str] = &["features"];

/// A tenant's override for one key.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConfigView {
    pub key: String,
    #[schema(value_type = Object)]
    pub value: Value,
    pub encrypted: bool,
    pub updated_at: DateTime<Utc>,
}

/// Body of `PUT /api/v1/tenants/{id}/config/{key}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutConfig {
    #[schema(value_type = Object)]
    pub value: Value,
    #[serde(default)]
    pub encrypted: bool,
}

fn valid_key(key: &str) -> bool {
    (1..=128).contains(&key.len())
        && key.starts_with(|c: char| c.is_ascii_lowercase())
        && !key.ends_with('.')
        && !key.contains("..")
        && key.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.' || b == b'-'
        })
}

/// The longest access-token lifetime a tenant may set: a stolen access
/// token cannot be revoked, so it must not live for long.
pub const MAX_SESSION_TIMEOUT_SECS: u64 = 24 * 60 * 60;

/// Checks the values of the keys the server itself reads; other keys are free-form.
pub fn validate_config_value(key: &str, value: &Value) -> std::result::Result<(), String> {
    match key {
        "session.timeout"
            if !value
                .as_u64()
                .is_some_and(|n| (1..=MAX_SESSION_TIMEOUT_SECS).contains(&n)) =>
        {
            Err(format!(
                "must be a whole number of seconds, from 1 to {MAX_SESSION_TIMEOUT_SECS}"
            ))
        }
        "file_upload.max_size" if value.as_u64().is_none() => {
            Err("must be a whole number of bytes".into())
        }
        "auth.self_registration" | "auth.otp" if !value.is_boolean() => {
            Err("must be true or false".into())
        }
        "security.password_policy" => {
            let Some(policy) = value.as_object() else {
                return Err("must be an object".into());
            };
            for (field, v) in policy {
                let ok = match field.as_str() {
                    "min_length" => v.as_u64().is_some_and(|n| (1..=1024).contains(&n)),
                    "require_uppercase"
                    | "require_lowercase"
                    | "require_numbers"
                    | "require_special_chars" => v.is_boolean(),
                    _ => return Err(format!("unknown rule `{field}`")),
                };
                if !ok {
                    return Err(format!("`{field}` has the wrong type or range"));
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

impl Tenants {
    /// A tenant whose settings `actor` may manage: platform staff over it, or
    /// the tenant's own admins.
    /// `action` names the access in the tenant's audit chain when platform
    /// staff read: reading a tenant's settings is access to its data (a
    /// change is audited with the change itself).
    async fn settings_tenant(
        &self,
        actor: &Principal,
        id_or_slug: &str,
        action: &str,
    ) -> Result<Tenant> {
        let tenant = self.core.visible_tenant(actor, id_or_slug).await?;
        let own_admin = actor.role == Role::Admin && actor.tenant_id == Some(tenant.id);
        if actor.may_administer(tenant.organization_id) || own_admin {
            if let Some(what) = action.strip_suffix(".read") {
                self.core.audit_staff_read(actor, &tenant, what).await?;
            }
            Ok(tenant)
        } else {
            Err(Error::Forbidden(
                "tenant admins and platform staff only".into(),
            ))
        }
    }

    fn check_reveal(actor: &Principal, reveal: bool) -> Result<()> {
        if reveal && actor.role != Role::SuperAdmin {
            return Err(Error::Forbidden(
                "only super-admins may reveal encrypted values".into(),
            ));
        }
        Ok(())
    }

    async fn view(&self, tenant: &Tenant, entry: ConfigEntry, reveal: bool) -> Result<ConfigView> {
        let value = self.core.shown_value(tenant, &entry, reveal).await?;
        Ok(ConfigView {
            key: entry.key,
            value,
            encrypted: entry.encrypted,
            updated_at: entry.updated_at,
        })
    }

    /// The tenant's overrides, or with `effective` the plan's defaults merged with them.
    pub async fn list_config(
        &self,
        actor: &Principal,
        id_or_slug: &str,
        effective: bool,
        reveal: bool,
    ) -> Result<BTreeMap<String, Value>> {
        Self::check_reveal(actor, reveal)?;
        let tenant = self
            .settings_tenant(actor, id_or_slug, "config.read")
            .await?;
        self.core.config_map(&tenant, effective, reveal).await
    }

    pub async fn get_config(
        &self,
        actor: &Principal,
        id_or_slug: &str,
        key: &str,
        reveal: bool,
    ) -> Result<ConfigView> {
        Self::check_reveal(actor, reveal)?;
        let tenant = self
            .settings_tenant(actor, id_or_slug, "config.read")
            .await?;
        let entry = self
            .core
            .store
            .config(&tenant, key)
            .await?
            .ok_or_else(|| Error::NotFound("config key".into()))?;
        self.view(&tenant, entry, reveal).await
    }

    /// Keys that change what the plan grants are for platform staff only: a
    /// tenant admin must not switch on features its plan lacks.
    fn check_staff_key(actor: &Principal, tenant: &Tenant, key: &str) -> Result<()> {
        if STAFF_ONLY_KEYS.contains(&key) && !actor.may_administer(tenant.organization_id) {
            return Err(Error::Forbidden(format!(
                "`{key}` is set by platform staff"
            )));
        }
        Ok(())
    }

    pub async fn put_config(
        &self,
        actor: &Principal,
        id_or_slug: &str,
        key: &str,
        body: PutConfig,
    ) -> Result<ConfigView> {
        let tenant = self
            .settings_tenant(actor, id_or_slug, "config.write")
            .await?;
        Self::check_staff_key(actor, &tenant, key)?;
        if !valid_key(key) {
            return Err(Error::invalid(
                "key",
                "must be dotted lowercase words such as `session.timeout`",
            ));
        }
        validate_config_value(key, &body.value).map_err(|m| Error::invalid("value", m))?;
        let stored = if body.encrypted {
            let wrapped = self.core.store.tenant_wrapped_key(&tenant).await?;
            let plain =
                serde_json::to_vec(&body.value).map_err(|e| Error::Internal(e.to_string()))?;
            let sealed = self
                .core
                .keyring
                .seal_value(tenant.id, &wrapped, key, &plain)
                .map_err(|e| Error::Internal(format!("sealing config: {e}")))?;
            Value::String(sealed)
        } else {
            body.value
        };
        let entry = ConfigEntry {
            key: key.to_owned(),
            value: stored,
            encrypted: body.encrypted,
            updated_at: self.core.clock.now(),
        };
        let audit = audit_entry(actor, "config.put", config_resource(&tenant, key));
        self.core.store.put_config(&tenant, &entry, &audit).await?;
        self.view(&tenant, entry, false).await
    }

    pub async fn delete_config(
        &self,
        actor: &Principal,
        id_or_slug: &str,
        key: &str,
    ) -> Result<()> {
        let tenant = self
            .settings_tenant(actor, id_or_slug, "config.delete")
            .await?;
        Self::check_staff_key(actor, &tenant, key)?;
        let audit = audit_entry(actor, "config.delete", config_resource(&tenant, key));
        if self.core.store.delete_config(&tenant, key, &audit).await? {
            Ok(())
        } else {
            Err(Error::NotFound("config key".into()))
        }
    }

    pub async fn features(
        &self,
        actor: &Principal,
        id_or_slug: &str,
    ) -> Result<BTreeMap<String, bool>> {
        let tenant = self.core.visible_tenant(actor, id_or_slug).await?;
        self.core
            .audit_staff_read(actor, &tenant, "features")
            .await?;
        self.core.tenant_features(&tenant).await
    }

    /// Branding is public: login pages show it before anyone signs in.
    pub async fn branding(&self, id_or_slug: &str) -> Result<Value> {
        let tenant = self
            .core
            .find_tenant(id_or_slug)
            .await?
            .ok_or(Error::TenantNotFound)?;
        Ok(tenant.branding)
    }

    pub async fn put_branding(
        &self,
        actor: &Principal,
        id_or_slug: &str,
        branding: Value,
    ) -> Result<Value> {
        let tenant = self
            .settings_tenant(actor, id_or_slug, "branding.write")
            .await?;
        if !branding.is_object() {
            return Err(Error::invalid("body", "branding must be a JSON object"));
        }
        self.core
            .require_feature(&tenant, "custom_branding")
            .await?;
        let change = tenantry::store::TenantChange {
            branding: Some(branding),
            updated_at: self.core.clock.now(),
            ..Default::default()
        };
        Ok(self
            .change_tenant(actor, "tenant.branding", &tenant, &change)
            .await?
            .branding)
    }
}

/// How audit entries name a config key.
fn config_resource(t: &Tenant, key: &str) -> String {
    format!("tenants/{}/config/{key}", t.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn config_keys_are_dotted_lowercase_words() {
        for good in ["session.timeout", "a", "smtp.password", "x-y.z_1"] {
            assert!(valid_key(good), "{good}");
        }
        for bad in ["", "Session", "a..b", "a.", ".a", "1abc", "a b", "a/b"] {
            assert!(!valid_key(bad), "{bad}");
        }
    }

    #[test]
    fn known_keys_are_type_checked() {
        assert!(validate_config_value("session.timeout", &json!(1)).is_ok());
        assert!(validate_config_value("session.timeout", &json!(0)).is_err());
        assert!(validate_config_value("session.timeout", &json!("60")).is_err());
        assert!(validate_config_value("session.timeout", &json!(86_400)).is_ok());
        assert!(validate_config_value("session.timeout", &json!(86_401)).is_err());
        assert!(validate_config_value("auth.otp", &json!("yes")).is_err());
        assert!(
            validate_config_value("security.password_policy", &json!({"min_length": 14})).is_ok()
        );
        assert!(
            validate_config_value("security.password_policy", &json!({"min_len": 14})).is_err()
        );
        assert!(validate_config_value("anything.else", &json!([1, 2])).is_ok());
    }
}
