//! Reading and verifying the audit chains. Entries are only ever written by
//! the store, with the change they record; nothing here edits or deletes one.
//! Reading the log is not itself audited: it would feed itself.

use crate::control::Tenants;
use crate::error::{Error, Result};
use serde::Serialize;
use std::iter::Peekable;
use tenantry::Acting;
use tenantry::audit::{AuditChain, AuditEntry, AuditFilter, ChainCheck};
use tenantry::store::StoreResult;
use tenantry::{Principal, Role, Tenant};
use uuid::Uuid;

/// Entries read per round trip while a chain is verified.
const VERIFY_BATCH: u32 = 1_000;

/// `GET /api/v1/tenants/{id}/audit/verify`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Verification {
    /// Every chain is intact.
    pub valid: bool,
    /// Entries checked, over all chains.
    pub entries: u64,
    /// The first entry whose hash or link to its predecessor is wrong.
    pub first_broken: Option<Uuid>,
    /// The same per chain (`control`, `data`; `platform` for the platform chain).
    pub chains: Vec<ChainVerification>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChainVerification {
    pub chain: AuditChain,
    pub entries: u64,
    pub first_broken: Option<Uuid>,
}

impl Verification {
    fn of(chains: Vec<ChainVerification>) -> Self {
        Self {
            valid: chains.iter().all(|c| c.first_broken.is_none()),
            entries: chains.iter().map(|c| c.entries).sum(),
            first_broken: chains.iter().find_map(|c| c.first_broken),
            chains,
        }
    }
}

/// One page of a listing and the cursor of the next, if any.
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    pub next_cursor: Option<String>,
}

/// Where a listing stopped in each chain it merges: the seq of the last
/// entry returned from each. Chains are ordered by seq, which (unlike entry
/// ids, taken from clocks before commit) never lets a page skip an entry.
struct ChainCursor(Vec<i64>);

impl ChainCursor {
    fn parse(cursor: Option<&str>, chains: usize) -> Result<Self> {
        let Some(cursor) = cursor.filter(|c| !c.is_empty()) else {
            return Ok(Self(vec![0; chains]));
        };
        let invalid = || Error::invalid("cursor", "not a cursor this server issued");
        let text = tenantry::page::decode_cursor(cursor)
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(invalid)?;
        let seqs = text
            .split('.')
            .map(|s| s.parse::<i64>().ok().filter(|n| *n >= 0))
            .collect::<Option<Vec<_>>>()
            .filter(|v| v.len() == chains)
            .ok_or_else(invalid)?;
        Ok(Self(seqs))
    }

    fn encode(&self) -> String {
        let text: Vec<String> = self.0.iter().map(i64::to_string).collect();
        tenantry::page::encode_cursor(text.join(".").as_bytes())
    }
}

/// Merges chains (each in seq order) into one page of at most `limit`
/// entries in time order, taking a prefix of each chain, and advances the
/// cursor past what it took. The next page exists when something fetched
/// was left.
fn merge(chains: Vec<Vec<(i64, AuditEntry)>>, cursor: &mut ChainCursor, limit: u32) -> AuditPage {
    let mut heads: Vec<Peekable<std::vec::IntoIter<(i64, AuditEntry)>>> = chains
        .into_iter()
        .map(|c| c.into_iter().peekable())
        .collect();
    let mut items = Vec::new();
    while items.len() < limit as usize {
        let next = heads
            .iter_mut()
            .enumerate()
            .filter_map(|(i, h)| h.peek().map(|(_, e)| (e.id, i)))
            .min();
        let Some((_, i)) = next else { break };
        if let Some((seq, entry)) = heads[i].next() {
            cursor.0[i] = seq;
            items.push(entry);
        }
    }
    let more = heads.iter_mut().any(|h| h.peek().is_some());
    AuditPage {
        items,
        next_cursor: more.then(|| cursor.encode()),
    }
}

/// Walks one chain page by page (`list(after_seq, limit)`), never holding it whole.
async fn verify_chain<F, Fut>(chain: AuditChain, list: F) -> Result<ChainVerification>
where
    F: Fn(i64, u32) -> Fut,
    Fut: Future<Output = StoreResult<Vec<(i64, AuditEntry)>>>,
{
    let mut check = ChainCheck::default();
    let mut after = 0;
    loop {
        let batch = list(after, VERIFY_BATCH).await?;
        for (_, entry) in &batch {
            check.feed(entry);
        }
        match batch.last() {
            Some((seq, _)) if batch.len() == VERIFY_BATCH as usize => after = *seq,
            _ => break,
        }
    }
    Ok(ChainVerification {
        chain,
        entries: check.entries,
        first_broken: check.first_broken,
    })
}

impl Tenants {
    /// A tenant's entries, its control and data chains merged in time order.
    async fn tenant_entries(
        &self,
        tenant: &Tenant,
        filter: &AuditFilter,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<AuditPage> {
        let mut cursor = ChainCursor::parse(cursor, 2)?;
        // One more than the page from each: whatever is left means a next page.
        let control = self
            .core
            .store
            .list_audit(Some(tenant), filter, cursor.0[0], limit + 1)
            .await?;
        let data = self
            .core
            .tenant_data(tenant)
            .await?
            .list_audit(filter, cursor.0[1], limit + 1)
            .await?;
        Ok(merge(vec![control, data], &mut cursor, limit))
    }

    /// `GET /api/v1/tenants/{id}/audit`: platform staff over the tenant.
    pub async fn tenant_audit(
        &self,
        actor: &Principal,
        id_or_slug: &str,
        filter: &AuditFilter,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<AuditPage> {
        let tenant = self.core.administered_tenant(actor, id_or_slug).await?;
        self.tenant_entries(&tenant, filter, cursor, limit).await
    }

    /// `GET /api/v1/audit`: a tenant admin, in its own tenant.
    pub async fn own_audit(
        &self,
        acting: &Acting,
        filter: &AuditFilter,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<AuditPage> {
        let p = &acting.principal;
        if p.role != Role::Admin || p.tenant_id != Some(acting.tenant.id) {
            return Err(Error::Forbidden("the tenant's admins only".into()));
        }
        self.tenant_entries(&acting.tenant, filter, cursor, limit)
            .await
    }

    /// `GET /api/v1/platform/audit`: events with no tenant (super-admin).
    pub async fn platform_audit(
        &self,
        actor: &Principal,
        filter: &AuditFilter,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<AuditPage> {
        if actor.role != Role::SuperAdmin {
            return Err(Error::Forbidden("super-admin only".into()));
        }
        let mut cursor = ChainCursor::parse(cursor, 1)?;
        let entries = self
            .core
            .store
            .list_audit(None, filter, cursor.0[0], limit + 1)
            .await?;
        Ok(merge(vec![entries], &mut cursor, limit))
    }

    /// `GET /api/v1/tenants/{id}/audit/verify`.
    pub async fn verify_audit(&self, actor: &Principal, id_or_slug: &str) -> Result<Verification> {
        let tenant = self.core.administered_tenant(actor, id_or_slug).await?;
        self.verify_tenant_chains(&tenant).await
    }

    /// Checks both chains of a tenant, link by link.
    pub async fn verify_tenant_chains(&self, tenant: &Tenant) -> Result<Verification> {
        let all = AuditFilter::default();
        let control = verify_chain(AuditChain::Control, |after, limit| {
            self.core.store.list_audit(Some(tenant), &all, after, limit)
        })
        .await?;
        let data = self.core.tenant_data(tenant).await?;
        let data = verify_chain(AuditChain::Data, |after, limit| {
            data.list_audit(&all, after, limit)
        })
        .await?;
        Ok(Verification::of(vec![control, data]))
    }

    /// Checks the platform chain.
    pub async fn verify_platform_chain(&self) -> Result<Verification> {
        let all = AuditFilter::default();
        let platform = verify_chain(AuditChain::Platform, |after, limit| {
            self.core.store.list_audit(None, &all, after, limit)
        })
        .await?;
        Ok(Verification::of(vec![platform]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenantry::TenantId;
    use tenantry::audit::NewAuditEntry;

    fn entries(n: usize) -> Vec<(i64, AuditEntry)> {
        let new = NewAuditEntry::new("a", "platform", "x", "r");
        (1..=n as i64)
            .map(|seq| {
                let e = AuditEntry::chain(
                    AuditChain::Control,
                    Some(TenantId::new()),
                    &new,
                    None,
                    chrono::Utc::now(),
                );
                (seq, e)
            })
            .collect()
    }

    #[test]
    fn merged_pages_take_a_prefix_of_each_chain_and_resume_after_it() {
        // Ids interleave: a, b alternate in creation order.
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for (i, e) in entries(6).into_iter().enumerate() {
            let seq = (i / 2 + 1) as i64;
            if i % 2 == 0 {
                a.push((seq, e.1))
            } else {
                b.push((seq, e.1))
            }
        }
        let mut cursor = ChainCursor::parse(None, 2).expect("start");
        let page = merge(vec![a.clone(), b.clone()], &mut cursor, 4);
        assert_eq!(page.items.len(), 4);
        assert_eq!(cursor.0, vec![2, 2]);
        let next = ChainCursor::parse(page.next_cursor.as_deref(), 2).expect("cursor");
        assert_eq!(next.0, vec![2, 2]);
        let rest = |c: &[(i64, AuditEntry)], after: i64| -> Vec<(i64, AuditEntry)> {
            c.iter().filter(|(s, _)| *s > after).cloned().collect()
        };
        let mut cursor = next;
        let page = merge(vec![rest(&a, 2), rest(&b, 2)], &mut cursor, 4);
        assert_eq!(page.items.len(), 2);
        assert!(page.next_cursor.is_none());
        assert!(ChainCursor::parse(Some("bm9wZQ"), 2).is_err());
    }
}
