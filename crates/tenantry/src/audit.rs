//! Audit entries, hash-chained per tenant: each entry's hash covers its own
//! fields and the previous entry's hash, so editing or removing any entry
//! breaks every link after it.

//!
//! A tenant's log is two chains, each kept beside the changes it records so
//! an entry commits in the same transaction as its change: `control` (in the
//! control store: the tenant itself, its users, logins, config, staff access)
//! and `data` (beside the tenant's records: shared tables or its own
//! database). Events that concern no tenant form the `platform` chain.

use crate::ids::TenantId;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::future::Future;
use uuid::Uuid;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// Runs `f` with `id` as the request id that audit entries created inside it carry.
pub async fn with_request_id<F: Future>(id: String, f: F) -> F::Output {
    REQUEST_ID.scope(id, f).await
}

/// The id of the request being served, if any (the CLI has none).
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Longest resource an entry keeps.
pub const MAX_RESOURCE_CHARS: usize = 512;

/// Which hash chain an entry belongs to; where it is stored, not hashed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuditChain {
    Platform,
    Control,
    Data,
}

/// Listing filters (all optional, combined with AND).
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub since: Option<DateTime<Utc>>,
}

/// What the caller supplies; id, time and hashes are filled in on append.
#[derive(Clone, Debug, PartialEq)]
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
    /// `None` on the platform chain.
    pub tenant_id: Option<TenantId>,
    pub actor: String,
    pub actor_scope: String,
    pub action: String,
    pub resource: String,
    pub at: DateTime<Utc>,
    pub request_id: Option<String>,
    pub prev_hash: Option<String>,
    pub hash: String,
    pub chain: AuditChain,
}

impl NewAuditEntry {
    /// An entry for the request being served (its id is picked up here).
    /// The resource is cut at `MAX_RESOURCE_CHARS`: a path is the caller's
    /// text, and an append-only log must not grow by what a client sends.
    pub fn new(
        actor: impl Into<String>,
        actor_scope: impl Into<String>,
        action: impl Into<String>,
        resource: impl Into<String>,
    ) -> Self {
        let resource: String = resource.into();
        Self {
            actor: actor.into(),
            actor_scope: actor_scope.into(),
            action: action.into(),
            resource: resource.chars().take(MAX_RESOURCE_CHARS).collect(),
            request_id: current_request_id(),
        }
    }
}

impl AuditEntry {
    /// Builds the next entry of a chain whose head hash is `prev_hash`.
    pub fn chain(
        chain: AuditChain,
        tenant_id: Option<TenantId>,
        new: &NewAuditEntry,
        prev_hash: Option<String>,
        at: DateTime<Utc>,
    ) -> Self {
        let mut entry = AuditEntry {
            id: Uuid::now_v7(),
            tenant_id,
            actor: new.actor.clone(),
            actor_scope: new.actor_scope.clone(),
            action: new.action.clone(),
            resource: new.resource.clone(),
            at,
            request_id: new.request_id.clone(),
            prev_hash,
            hash: String::new(),
            chain,
        };
        entry.hash = entry.compute_hash();
        entry
    }

    /// Links `entries` (each with its time) onto a chain whose last entry
    /// is `head` (`(seq, hash)`), in order: each entry's seq and the entry.
    /// Times are cut to microseconds first, as both engines store them, so
    /// the entry returned is the entry a later read returns.
    pub fn link_after<'a>(
        chain: AuditChain,
        tenant_id: Option<TenantId>,
        head: Option<(i64, String)>,
        entries: impl IntoIterator<Item = (&'a NewAuditEntry, DateTime<Utc>)>,
    ) -> Vec<(i64, AuditEntry)> {
        use chrono::SubsecRound;
        let (mut seq, mut prev) = head.map_or((0, None), |(seq, hash)| (seq, Some(hash)));
        entries
            .into_iter()
            .map(|(new, at)| {
                seq += 1;
                let entry = Self::chain(chain, tenant_id, new, prev.take(), at.trunc_subsecs(6));
                prev = Some(entry.hash.clone());
                (seq, entry)
            })
            .collect()
    }

    /// `link_after` for one entry.
    pub fn link_one_after(
        chain: AuditChain,
        tenant_id: Option<TenantId>,
        head: Option<(i64, String)>,
        new: &NewAuditEntry,
        at: DateTime<Utc>,
    ) -> (i64, AuditEntry) {
        use chrono::SubsecRound;
        let (seq, prev) = head.map_or((0, None), |(seq, hash)| (seq, Some(hash)));
        (
            seq + 1,
            Self::chain(chain, tenant_id, new, prev, at.trunc_subsecs(6)),
        )
    }

    /// SHA-256 over a canonical encoding: a JSON array of the fields in a
    /// fixed order, so no field can be shifted into another.
    pub fn compute_hash(&self) -> String {
        let canonical = serde_json::json!([
            self.id.to_string(),
            self.tenant_id.map(|t| t.to_string()),
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

/// Walks one chain in order, entry by entry (so a long chain is checked
/// page by page, never held whole): remembers the first entry whose hash or
/// link is wrong.
#[derive(Debug, Default)]
pub struct ChainCheck {
    prev: Option<String>,
    pub entries: u64,
    pub first_broken: Option<Uuid>,
}

impl ChainCheck {
    pub fn feed(&mut self, e: &AuditEntry) {
        self.entries += 1;
        if self.first_broken.is_none() && (e.prev_hash != self.prev || e.compute_hash() != e.hash) {
            self.first_broken = Some(e.id);
        }
        self.prev = Some(e.hash.clone());
    }
}

/// The first entry whose hash or link is wrong, if any.
#[cfg(test)]
fn first_broken(entries: &[AuditEntry]) -> Option<Uuid> {
    let mut check = ChainCheck::default();
    entries.iter().for_each(|e| check.feed(e));
    check.first_broken
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
        let link = |new: NewAuditEntry, prev: Option<&AuditEntry>| {
            let prev = prev.map(|p| p.hash.clone());
            AuditEntry::chain(AuditChain::Control, Some(t), &new, prev, Utc::now())
        };
        let a = link(entry("a"), None);
        let b = link(entry("b"), Some(&a));
        let c = link(entry("c"), Some(&b));
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
