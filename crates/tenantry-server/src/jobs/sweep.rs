//! The sweeper: finishes a tenant's deletion. `DELETE /tenants/{id}` made
//! the tenant `deleting` (refused from then on) and queued this job; it
//! seals the tenant's data (writes already resolved elsewhere are refused),
//! purges it, removes the files its jobs left, then the control store's
//! rows and the tenant's data key (crypto-shredding: an encrypted value
//! that survives anywhere, in a backup say, can no longer be opened), and
//! marks the tenant `deleted`. Every step may be repeated, and a failing
//! run is retried until the purge is done: no tenant is left half deleted.

use super::{JobError, JobResult, Run};
use tenantry::TenantStatus;
use tenantry::store::StoreError;

pub async fn run(run: &mut Run<'_>) -> JobResult<Option<String>> {
    let s = run.services;
    let tenant = s
        .core
        .store
        .tenant_any(run.job.tenant_id)
        .await?
        .ok_or_else(|| JobError::Fatal("the tenant's row is gone".into()))?;
    match tenant.status {
        TenantStatus::Deleted => return Ok(None),
        TenantStatus::Deleting => {}
        other => {
            return Err(JobError::Fatal(format!(
                "the tenant is {}, not being deleted",
                other.as_str()
            )));
        }
    }
    // Already purged (a repeated run) or never written: nothing to seal.
    match s.core.data.handle(&tenant).await {
        Ok(data) => match data.seal().await {
            Ok(()) | Err(StoreError::Absent) => {}
            Err(e) => return Err(e.into()),
        },
        Err(StoreError::Absent) => {}
        Err(e) => return Err(e.into()),
    }
    run.set_progress(0.3);
    s.core.data.purge(&tenant).await?;
    run.set_progress(0.6);
    s.tenants.jobs.remove_files(tenant.id)?;
    let audit = run.audit("tenant.purge", format!("tenants/{}", tenant.id));
    s.core.store.purge_tenant(&tenant, &audit).await?;
    s.core.forget_tenant();
    tracing::info!(tenant_id = %tenant.id, "tenant purged");
    Ok(None)
}
