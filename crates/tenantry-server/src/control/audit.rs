//! Reading and verifying the audit chains. Entries are only ever written by
//! the store, with the change they record; nothing here edits or deletes one.

use super::Services;
use super::users::Acting;
use crate::error::{Error, Result};
use serde::Serialize;
use tenantry::audit::{AuditChain, AuditEntry, AuditFilter, ChainCheck};
use tenantry::store::{PageRequest, StoreResult};
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
    /// The first entry whose hash or link is wrong.
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

/// Walks one chain page by page (`walk(after_seq, limit)`), never holding it whole.
async fn verify_chain<F, Fut>(chain: AuditChain, walk: F) -> Result<ChainVerification>
where
    F: Fn(i64, u32) -> Fut,
    Fut: Future<Output = StoreResult<Vec<(i64, AuditEntry)>>>,
{
    let mut check = ChainCheck::default();
    let mut after = 0;
    loop {
        let batch = walk(after, VERIFY_BATCH).await?;
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

/// Merges pages of several chains (each ordered by id) into one page.
fn merge(mut pages: Vec<Vec<AuditEntry>>, limit: u32) -> Vec<AuditEntry> {
    let mut all: Vec<AuditEntry> = pages.drain(..).flatten().collect();
    all.sort_by_key(|e| e.id);
    all.truncate(limit as usize);
    all
}

impl Services {
    /// A tenant's entries, both chains merged by time.
    async fn tenant_entries(
        &self,
        tenant: &Tenant,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Vec<AuditEntry>> {
        let control = self.store.list_audit(Some(tenant), filter, page).await?;
        let data = self
            .tenant_data(tenant)
            .await?
            .list_audit(filter, page)
            .await?;
        Ok(merge(vec![control, data], page.limit))
    }

    /// `GET /api/v1/tenants/{id}/audit`: platform staff over the tenant.
    pub async fn tenant_audit(
        &self,
        actor: &Principal,
        id_or_slug: &str,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Vec<AuditEntry>> {
        let tenant = self.administered_tenant(actor, id_or_slug).await?;
        self.tenant_entries(&tenant, filter, page).await
    }

    /// `GET /api/v1/audit`: a tenant admin, in its own tenant.
    pub async fn own_audit(
        &self,
        acting: &Acting,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Vec<AuditEntry>> {
        let p = &acting.principal;
        if p.role != Role::Admin || p.tenant_id != Some(acting.tenant.id) {
            return Err(Error::Forbidden("the tenant's admins only".into()));
        }
        self.tenant_entries(&acting.tenant, filter, page).await
    }

    /// `GET /api/v1/platform/audit`: events with no tenant (super-admin).
    pub async fn platform_audit(
        &self,
        actor: &Principal,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Vec<AuditEntry>> {
        if actor.role != Role::SuperAdmin {
            return Err(Error::Forbidden("super-admin only".into()));
        }
        Ok(self.store.list_audit(None, filter, page).await?)
    }

    /// `GET /api/v1/tenants/{id}/audit/verify`.
    pub async fn verify_audit(&self, actor: &Principal, id_or_slug: &str) -> Result<Verification> {
        let tenant = self.administered_tenant(actor, id_or_slug).await?;
        self.verify_tenant_chains(&tenant).await
    }

    /// Checks both chains of a tenant, link by link.
    pub async fn verify_tenant_chains(&self, tenant: &Tenant) -> Result<Verification> {
        let control = verify_chain(AuditChain::Control, |after, limit| {
            self.store.walk_audit(Some(tenant), after, limit)
        })
        .await?;
        let data = self.tenant_data(tenant).await?;
        let data = verify_chain(AuditChain::Data, |after, limit| {
            data.walk_audit(after, limit)
        })
        .await?;
        Ok(Verification::of(vec![control, data]))
    }

    /// Checks the platform chain.
    pub async fn verify_platform_chain(&self) -> Result<Verification> {
        let platform = verify_chain(AuditChain::Platform, |after, limit| {
            self.store.walk_audit(None, after, limit)
        })
        .await?;
        Ok(Verification::of(vec![platform]))
    }
}
