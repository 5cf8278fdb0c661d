//! Audit entries, hash-chained per tenant: each entry's hash covers its own
//! fields and the previous entry's hash, so editing or removing any entry
//! breaks every link after it.

use crate::ids::TenantId;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// What the caller supplies; id, time and hashes are filled in on append.
#[derive(Clone, Debug)]
pub struct NewAuditEntry {
    /// The acting user's id.
    pub actor: String,
    /// Where the actor's rights come from: `platform`, `organization:<id>` or `tenant`.
    pub actor_scope: String,
    pub action: String,
    pub resource: String,
    pub request_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: Uuid,
    pub tenant_id: TenantId,
    pub actor: String,
    pub actor_scope: String,
    pub action: String,
    pub resource: String,
    pub at: DateTime<Utc>,
    pub request_id: Option<String>,
    pub prev_hash: Option<String>,
    pub hash: String,
}

impl AuditEntry {
    /// Builds the next entry of a chain whose head hash is `prev_hash`.
    pub fn chain(
        tenant_id: TenantId,
        new: NewAuditEntry,
        prev_hash: Option<String>,
        at: DateTime<Utc>,
    ) -> Self {
        let mut entry = AuditEntry {
            id: Uuid::now_v7(),
            tenant_id,
            actor: new.actor,
            actor_scope: new.actor_scope,
            action: new.action,
            resource: new.resource,
            at,
            request_id: new.request_id,
            prev_hash,
            hash: String::new(),
        };
        entry.hash = entry.compute_hash();
        entry
    }

    /// SHA-256 over a canonical encoding: a JSON array of the fields in a
    /// fixed order, so no field can be shifted into another.
    pub fn compute_hash(&self) -> String {
        let canonical = serde_json::json!([
            self.id.to_string(),
            self.tenant_id.to_string(),
            self.actor,
            self.actor_scope,
            self.action,
            self.resource,
            self.at.to_rfc3339_opts(SecondsFormat::Micros, true),
            self.request_id,
            self.prev_hash,
        ]);
        hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
    }
}

/// The first entry whose hash or link is wrong, if any.
pub fn first_broken(entries: &[AuditEntry]) -> Option<Uuid> {
    let mut prev: Option<&str> = None;
    for e in entries {
        if e.prev_hash.as_deref() != prev || e.compute_hash() != e.hash {
            return Some(e.id);
        }
        prev = Some(&e.hash);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(action: &str) -> NewAuditEntry {
        NewAuditEntry {
            actor: "u1".into(),
            actor_scope: "platform".into(),
            action: action.into(),
            resource: "/api/v1/users".into(),
            request_id: None,
        }
    }

    #[test]
    fn edits_break_the_chain_at_the_edited_entry() {
        let t = TenantId::new();
        let a = AuditEntry::chain(t, entry("a"), None, Utc::now());
        let b = AuditEntry::chain(t, entry("b"), Some(a.hash.clone()), Utc::now());
        let c = AuditEntry::chain(t, entry("c"), Some(b.hash.clone()), Utc::now());
        let mut chain = vec![a, b, c];
        assert_eq!(first_broken(&chain), None);
        chain[1].action = "edited".into();
        assert_eq!(first_broken(&chain), Some(chain[1].id));
        chain.remove(1);
        assert_eq!(
            first_broken(&chain),
            Some(chain[1].id),
            "a removed entry breaks the next link"
        );
    }
}
