//! Bringing every dedicated tenant's database to the binary's schema:
//! bounded parallelism, a progress bar on a terminal, each tenant's version
//! recorded the moment it is done (so a rerun after a crash resumes with the
//! ones left), and a failing tenant reported without holding up the others.

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Arc;
use tenantry::Tenant;
use tenantry::store::{DataPlane, Store, StoreError};

/// What a run did.
#[derive(Debug, Default)]
pub struct Report {
    pub migrated: usize,
    pub failed: Vec<(Tenant, StoreError)>,
}

impl Report {
    /// An error naming every tenant that failed, if any did.
    pub fn into_result(self) -> anyhow::Result<usize> {
        if self.failed.is_empty() {
            return Ok(self.migrated);
        }
        let lines: Vec<String> = self
            .failed
            .iter()
            .map(|(t, e)| format!("  {} ({}): {e}", t.slug, t.id))
            .collect();
        anyhow::bail!(
            "{} tenant database(s) failed to migrate ({} migrated); fix them and run `tenantry migrate` again:\n{}",
            self.failed.len(),
            self.migrated,
            lines.join("\n")
        )
    }
}

/// Dedicated tenants whose database is behind the binary.
pub async fn behind(store: &dyn Store, data: &dyn DataPlane) -> Result<Vec<Tenant>, StoreError> {
    store.dedicated_behind(data.schema_version()).await
}

/// Migrates every dedicated tenant that is behind, `parallel` at a time.
pub async fn dedicated_tenants(
    store: Arc<dyn Store>,
    data: Arc<dyn DataPlane>,
    parallel: usize,
) -> Result<Report, StoreError> {
    let tenants = behind(store.as_ref(), data.as_ref()).await?;
    let version = data.schema_version();
    let bar = progress_bar(tenants.len() as u64, "migrating tenants");
    let results: Vec<(Tenant, Result<(), StoreError>)> = futures::stream::iter(tenants)
        .map(|tenant| {
            let (store, data, bar) = (store.clone(), data.clone(), bar.clone());
            async move {
                let done = async {
                    data.migrate_tenant(&tenant).await?;
                    store.set_schema_version(&tenant, version).await
                }
                .await;
                if let Err(e) = &done {
                    bar.println(format!("tenant {} failed: {e}", tenant.slug));
                    tracing::error!(tenant_id = %tenant.id, error = %e, "tenant migration failed");
                }
                bar.inc(1);
                (tenant, done)
            }
        })
        .buffer_unordered(parallel.max(1))
        .collect()
        .await;
    bar.finish_and_clear();
    let mut report = Report::default();
    for (tenant, result) in results {
        match result {
            Ok(()) => report.migrated += 1,
            Err(e) => report.failed.push((tenant, e)),
        }
    }
    Ok(report)
}

/// A progress bar for `len` steps of `what`, drawn on stderr when it is a
/// terminal (hidden otherwise, and when there is nothing to do).
pub(crate) fn progress_bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if len == 0 || !std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{what} {{bar:40}} {{pos}}/{{len}} ({{per_sec}}, eta {{eta}}) {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}
