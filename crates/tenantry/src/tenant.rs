//! The tenant model: identity, lifecycle status and isolation tier.

use crate::ids::{OrgId, TenantId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Slugs the platform keeps for itself (`default` is the single-tenant tenant).
pub const RESERVED_SLUGS: &[&str] = &["www", "api", "admin", "app", "default"];

/// A validated tenant slug: 3–63 chars of `[a-z0-9-]`, not starting or ending
/// with `-`, not reserved, and not a UUID. The rule keeps slugs usable as DNS labels.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(transparent)]
#[schema(value_type = String)]
pub struct Slug(String);

/// Why a slug was refused; the message is shown to the client.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SlugError {
    #[error("must be 3 to 63 characters long")]
    Length,
    #[error("may contain only lowercase letters, digits and '-'")]
    Charset,
    #[error("must not start or end with '-'")]
    Hyphen,
    #[error("is reserved")]
    Reserved,
    /// Paths take a tenant's id or its slug: a slug that parses as a UUID
    /// would name two tenants.
    #[error("must not have the form of a UUID")]
    UuidShaped,
}

impl Slug {
    pub fn parse(s: &str) -> Result<Self, SlugError> {
        Self::parse_allowing_reserved(s).and_then(|slug| {
            if RESERVED_SLUGS.contains(&slug.as_str()) {
                Err(SlugError::Reserved)
            } else {
                Ok(slug)
            }
        })
    }

    /// Parses a slug that may be reserved: the platform's own `default` tenant.
    pub fn parse_allowing_reserved(s: &str) -> Result<Self, SlugError> {
        if !(3..=63).contains(&s.len()) {
            return Err(SlugError::Length);
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(SlugError::Charset);
        }
        if s.starts_with('-') || s.ends_with('-') {
            return Err(SlugError::Hyphen);
        }
        if s.parse::<uuid::Uuid>().is_ok() {
            return Err(SlugError::UuidShaped);
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Lifecycle of a tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    Active,
    Suspended,
    /// Being purged: refused everywhere as unknown, its slug and domain
    /// already free; `deleted` once the sweeper has removed its data.
    Deleting,
    Deleted,
}

impl TenantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Active => "active",
            TenantStatus::Suspended => "suspended",
            TenantStatus::Deleting => "deleting",
            TenantStatus::Deleted => "deleted",
        }
    }

    /// Active or suspended: a tenant that exists for its users.
    pub fn is_live(self) -> bool {
        matches!(self, TenantStatus::Active | TenantStatus::Suspended)
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "active" => TenantStatus::Active,
            "suspended" => TenantStatus::Suspended,
            "deleting" => TenantStatus::Deleting,
            "deleted" => TenantStatus::Deleted,
            _ => return None,
        })
    }
}

/// Where a tenant's data lives: shared tables, or a database of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    Shared,
    Dedicated,
}

impl Isolation {
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Shared => "shared",
            Isolation::Dedicated => "dedicated",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "shared" => Isolation::Shared,
            "dedicated" => Isolation::Dedicated,
            _ => return None,
        })
    }
}

/// A tenant as the control plane knows it.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Tenant {
    pub id: TenantId,
    pub slug: Slug,
    pub name: String,
    pub plan: String,
    pub status: TenantStatus,
    pub isolation: Isolation,
    pub organization_id: Option<OrgId>,
    pub domain: Option<String>,
    /// Free-form data of the tenant's owner (district, state, contacts…).
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    #[schema(value_type = Object)]
    pub branding: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The database server holding the tenant's data, where several are
    /// configured (`[[placement.servers]]`); shown to super-admins only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_rules() {
        let cases: &[(&str, Result<(), SlugError>)] = &[
            ("acme", Ok(())),
            ("a-b", Ok(())),
            ("a--b", Ok(())),
            ("abc123", Ok(())),
            ("ab", Err(SlugError::Length)),
            (&"a".repeat(64), Err(SlugError::Length)),
            ("Acme", Err(SlugError::Charset)),
            ("../x", Err(SlugError::Charset)),
            ("a_b", Err(SlugError::Charset)),
            ("-abc", Err(SlugError::Hyphen)),
            ("abc-", Err(SlugError::Hyphen)),
            ("www", Err(SlugError::Reserved)),
            ("default", Err(SlugError::Reserved)),
            (
                "123e4567-e89b-12d3-a456-426614174000",
                Err(SlugError::UuidShaped),
            ),
            (
                "123e4567e89b12d3a456426614174000",
                Err(SlugError::UuidShaped),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(Slug::parse(input).map(|_| ()), *expected, "slug {input:?}");
        }
        assert!(Slug::parse_allowing_reserved("default").is_ok());
    }
}
