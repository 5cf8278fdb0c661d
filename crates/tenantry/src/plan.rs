//! Plans: limits, feature flags and configuration defaults.

use crate::tenant::Isolation;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

const GB: u64 = 1024 * 1024 * 1024;

/// Quotas a plan grants. `None` means unlimited.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Limits {
    pub max_users: Option<u64>,
    pub max_storage_bytes: Option<u64>,
    pub api_requests_per_day: Option<u64>,
    pub requests_per_second: Option<u64>,
    /// Collections the tenant may define. Absent from a stored or sent
    /// plan: the default, not unlimited.
    #[serde(default = "default_max_collections")]
    pub max_collections: Option<u64>,
    /// Distinct field names the tenant may index or make unique, over all
    /// its collections: on the shared tier each name is an index of the
    /// table every shared tenant writes, so they are few by default.
    #[serde(default = "default_max_indexed_fields")]
    pub max_indexed_fields: Option<u64>,
}

fn default_max_collections() -> Option<u64> {
    Some(100)
}

fn default_max_indexed_fields() -> Option<u64> {
    Some(16)
}

/// A plan: what a tenant on it may do and the configuration it starts from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Plan {
    pub code: String,
    pub name: String,
    pub limits: Limits,
    pub features: BTreeMap<String, bool>,
    #[schema(value_type = Object)]
    pub config_defaults: BTreeMap<String, Value>,
    pub default_isolation: Isolation,
}

/// Every feature name the built-in plans know.
pub const FEATURES: &[&str] = &[
    "custom_branding",
    "biometric_auth",
    "ai_verification",
    "advanced_analytics",
    "priority_support",
];

impl Plan {
    pub fn has_feature(&self, name: &str) -> bool {
        self.features.get(name).copied().unwrap_or(false)
    }

    /// The four plans every installation starts with.
    pub fn builtin() -> Vec<Plan> {
        BUILTIN.iter().map(BuiltinPlan::to_plan).collect()
    }
}

/// One row of the built-in catalogue.
struct BuiltinPlan {
    code: &'static str,
    name: &'static str,
    max_users: u64,
    storage_gb: u64,
    requests_per_day: Option<u64>,
    requests_per_second: u64,
    min_password_length: u64,
    special_chars: bool,
    session_timeout: u64,
    /// Position on the ladder: features unlock at premium (1) or enterprise (2).
    level: u8,
    isolation: Isolation,
}

const BUILTIN: [BuiltinPlan; 4] = [
    BuiltinPlan {
        code: "basic",
        name: "Basic",
        max_users: 100,
        storage_gb: 10,
        requests_per_day: Some(1_000),
        requests_per_second: 10,
        min_password_length: 8,
        special_chars: false,
        session_timeout: 3_600,
        level: 0,
        isolation: Isolation::Shared,
    },
    BuiltinPlan {
        code: "premium",
        name: "Premium",
        max_users: 1_000,
        storage_gb: 100,
        requests_per_day: Some(10_000),
        requests_per_second: 50,
        min_password_length: 10,
        special_chars: true,
        session_timeout: 7_200,
        level: 1,
        isolation: Isolation::Shared,
    },
    BuiltinPlan {
        code: "enterprise",
        name: "Enterprise",
        max_users: 10_000,
        storage_gb: 1_024,
        requests_per_day: Some(100_000),
        requests_per_second: 200,
        min_password_length: 12,
        special_chars: true,
        session_timeout: 14_400,
        level: 2,
        isolation: Isolation::Dedicated,
    },
    BuiltinPlan {
        code: "custom",
        name: "Custom",
        max_users: 100_000,
        storage_gb: 10 * 1_024,
        requests_per_day: None,
        requests_per_second: 1_000,
        min_password_length: 12,
        special_chars: true,
        session_timeout: 14_400,
        level: 3,
        isolation: Isolation::Dedicated,
    },
];

impl BuiltinPlan {
    fn to_plan(&self) -> Plan {
        let features = FEATURES
            .iter()
            .map(|f| {
                let needed = match *f {
                    "custom_branding" | "biometric_auth" => 1,
                    _ => 2,
                };
                ((*f).to_owned(), self.level >= needed)
            })
            .collect();
        let config_defaults = BTreeMap::from([
            (
                "security.password_policy".to_owned(),
                json!({
                    "min_length": self.min_password_length,
                    "require_uppercase": true,
                    "require_lowercase": true,
                    "require_numbers": true,
                    "require_special_chars": self.special_chars,
                }),
            ),
            ("session.timeout".to_owned(), json!(self.session_timeout)),
            (
                "api.rate_limit".to_owned(),
                json!({ "requests_per_second": self.requests_per_second, "requests_per_day": self.requests_per_day }),
            ),
            (
                "file_upload.max_size".to_owned(),
                json!(10 * 1024 * 1024 * (u64::from(self.level) + 1)),
            ),
            ("auth.self_registration".to_owned(), json!(false)),
            ("auth.otp".to_owned(), json!(false)),
        ]);
        Plan {
            code: self.code.to_owned(),
            name: self.name.to_owned(),
            limits: Limits {
                max_users: Some(self.max_users),
                max_storage_bytes: Some(self.storage_gb * GB),
                api_requests_per_day: self.requests_per_day,
                requests_per_second: Some(self.requests_per_second),
                max_collections: Some(100 * 10u64.pow(u32::from(self.level))),
                max_indexed_fields: Some(16 << self.level),
            },
            features,
            config_defaults,
            default_isolation: self.isolation,
        }
    }
}

/// Merges `overlay` into `base` the way RFC 7396 merges a patch: objects merge
/// key by key, anything else replaces. Used for effective configuration, so a
/// tenant overriding one password rule keeps the plan's other rules.
pub fn merge_json(base: &mut Value, overlay: &Value) {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => {
                        merge_json(existing, v)
                    }
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(code: &str) -> Plan {
        Plan::builtin()
            .into_iter()
            .find(|p| p.code == code)
            .expect("built-in plan")
    }

    #[test]
    fn builtin_limits_match_the_catalogue() {
        let expect = [
            ("basic", 100, 10 * GB, Some(1_000)),
            ("premium", 1_000, 100 * GB, Some(10_000)),
            ("enterprise", 10_000, 1_024 * GB, Some(100_000)),
            ("custom", 100_000, 10 * 1_024 * GB, None),
        ];
        for (code, users, storage, per_day) in expect {
            let p = plan(code);
            assert_eq!(p.limits.max_users, Some(users), "{code}");
            assert_eq!(p.limits.max_storage_bytes, Some(storage), "{code}");
            assert_eq!(p.limits.api_requests_per_day, per_day, "{code}");
        }
    }

    #[test]
    fn features_follow_the_plan_ladder() {
        assert!(!plan("basic").has_feature("custom_branding"));
        assert!(plan("premium").has_feature("custom_branding"));
        assert!(plan("premium").has_feature("biometric_auth"));
        assert!(!plan("premium").has_feature("priority_support"));
        assert!(plan("enterprise").has_feature("ai_verification"));
        assert!(plan("custom").has_feature("advanced_analytics"));
    }

    #[test]
    fn password_policy_and_session_defaults_per_plan() {
        for (code, min, special, timeout) in [
            ("basic", 8, false, 3600),
            ("premium", 10, true, 7200),
            ("enterprise", 12, true, 14_400),
            ("custom", 12, true, 14_400),
        ] {
            let p = plan(code);
            let policy = &p.config_defaults["security.password_policy"];
            assert_eq!(policy["min_length"], min, "{code}");
            assert_eq!(policy["require_special_chars"], special, "{code}");
            assert_eq!(policy["require_uppercase"], true, "{code}");
            assert_eq!(p.config_defaults["session.timeout"], timeout, "{code}");
        }
    }

    #[test]
    fn merge_keeps_unpatched_keys_of_objects() {
        let mut base = json!({"a": 1, "b": {"c": 2, "d": 3}});
        merge_json(&mut base, &json!({"b": {"c": 9}, "e": true}));
        assert_eq!(base, json!({"a": 1, "b": {"c": 9, "d": 3}, "e": true}));
        let mut scalar = json!(5);
        merge_json(&mut scalar, &json!({"x": 1}));
        assert_eq!(scalar, json!({"x": 1}));
    }
}
