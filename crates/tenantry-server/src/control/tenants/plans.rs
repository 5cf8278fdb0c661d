//! The plan catalogue: built-in plans, edited or extended by super-admins.

use super::config::validate_config_value;
use crate::control::{Tenants, audit_entry};
use crate::error::{Error, Result, Validator};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use tenantry::{Isolation, Limits, Plan, Principal, Role};

/// Body of `PUT /api/v1/plans/{code}`; the code comes from the path.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanBody {
    /// Optional; when present it must equal the code in the path.
    pub code: Option<String>,
    pub name: String,
    pub limits: Limits,
    #[serde(default)]
    pub features: BTreeMap<String, bool>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub config_defaults: BTreeMap<String, Value>,
    pub default_isolation: Option<Isolation>,
}

fn valid_code(code: &str) -> bool {
    let mut chars = code.chars();
    (1..=63).contains(&code.len())
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

impl Tenants {
    /// Replaces or adds a plan; returns it and whether it was new.
    pub async fn put_plan(
        &self,
        actor: &Principal,
        code: &str,
        body: PlanBody,
    ) -> Result<(Plan, bool)> {
        if actor.role != Role::SuperAdmin {
            return Err(Error::Forbidden("super-admin only".into()));
        }
        let mut v = Validator::default();
        v.check(
            valid_code(code),
            "code",
            "must be 1-63 chars of [a-z0-9_-], starting with a letter",
        );
        v.check(
            body.code.as_deref().is_none_or(|c| c == code),
            "code",
            "must match the code in the path",
        );
        v.check(!body.name.trim().is_empty(), "name", "must not be empty");
        let l = &body.limits;
        for (field, limit) in [
            ("max_users", l.max_users),
            ("max_storage_bytes", l.max_storage_bytes),
            ("api_requests_per_day", l.api_requests_per_day),
            ("requests_per_second", l.requests_per_second),
            ("max_collections", l.max_collections),
            ("max_indexed_fields", l.max_indexed_fields),
        ] {
            // What every store and every client can hold (a signed 64-bit
            // integer, the OpenAPI document's int64).
            v.check(
                limit.is_none_or(|n| i64::try_from(n).is_ok()),
                &format!("limits.{field}"),
                "must be at most 9223372036854775807 (or null: unlimited)",
            );
        }
        for (key, value) in &body.config_defaults {
            if let Err(message) = validate_config_value(key, value) {
                v.push(&format!("config_defaults.{key}"), message);
            }
        }
        v.finish()?;
        let plan = Plan {
            code: code.to_owned(),
            name: body.name.trim().to_owned(),
            limits: body.limits,
            features: body.features,
            config_defaults: body.config_defaults,
            default_isolation: body.default_isolation.unwrap_or(Isolation::Shared),
        };
        let audit = audit_entry(actor, "plan.put", format!("plans/{code}"));
        let created = self.core.store.upsert_plan(&plan, &audit).await?;
        self.core.caches.plans.invalidate(&code.to_owned());
        Ok((plan, created))
    }
}
