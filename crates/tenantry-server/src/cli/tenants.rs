//! `tenantry tenant …` and `tenantry audit verify`: the tenant commands,
//! and following the jobs they start.

use super::{TenantCommand, describe};
use crate::control::tenants::NewTenant;
use crate::control::tenants::jobs::{ExportRequest, JobQuery, MoveRequest};
use crate::control::{Services, console_operator};
use anyhow::Context;
use std::sync::Arc;
use tenantry::job::{Job, JobStatus};
use tenantry::store::{PageRequest, TenantFilter};
use tenantry::{Isolation, Tenant, TenantStatus};

pub(super) fn print_tenant(t: &Tenant) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(t)?);
    Ok(())
}

/// Every tenant the filter selects, page by page.
pub(super) async fn all_tenants(
    services: &Services,
    filter: TenantFilter,
) -> anyhow::Result<Vec<Tenant>> {
    let mut page = PageRequest {
        after: None,
        limit: 500,
    };
    let mut all = Vec::new();
    loop {
        let rows = services
            .core
            .list_tenants(&console_operator(), filter.clone(), &page)
            .await
            .map_err(describe)?;
        let full = rows.len() == page.limit as usize;
        page.after = rows.last().map(|t| t.id.0);
        all.extend(rows);
        if !full {
            return Ok(all);
        }
    }
}

/// `tenantry audit verify [--tenant]`: prints one line per chain that is
/// broken (or, for one tenant, per chain), and fails if any is.
pub(super) async fn verify_audit(services: &Services, tenant: Option<&str>) -> anyhow::Result<()> {
    let mut reports = Vec::new();
    match tenant {
        Some(tenant) => {
            let t = services
                .core
                .administered_tenant(&console_operator(), tenant)
                .await
                .map_err(describe)?;
            reports.push((
                format!("tenant {}", t.slug),
                services.tenants.verify_tenant_chains(&t).await?,
            ));
        }
        None => {
            reports.push((
                "platform".to_owned(),
                services.tenants.verify_platform_chain().await?,
            ));
            let tenants = all_tenants(services, TenantFilter::default()).await?;
            let bar = crate::migrate::progress_bar(tenants.len() as u64, "verifying tenants");
            for t in tenants {
                let report = services.tenants.verify_tenant_chains(&t).await?;
                reports.push((format!("tenant {}", t.slug), report));
                bar.inc(1);
            }
            bar.finish_and_clear();
        }
    }
    let (mut entries, mut broken) = (0, 0);
    for (name, report) in &reports {
        entries += report.entries;
        for chain in &report.chains {
            match chain.first_broken {
                Some(id) => {
                    broken += 1;
                    println!(
                        "{name} ({:?} chain): BROKEN at entry {id} ({} entries)",
                        chain.chain, chain.entries
                    );
                }
                None if tenant.is_some() => println!(
                    "{name} ({:?} chain): intact ({} entries)",
                    chain.chain, chain.entries
                ),
                None => {}
            }
        }
    }
    if broken > 0 {
        anyhow::bail!("{broken} broken audit chain(s)");
    }
    println!("audit log intact: {entries} entries checked");
    Ok(())
}

pub(super) async fn tenant_command(
    services: &Arc<Services>,
    cmd: &TenantCommand,
) -> anyhow::Result<()> {
    let operator = console_operator();
    match cmd {
        TenantCommand::Create(a) => {
            let isolation = match a.isolation.as_deref() {
                None => None,
                Some(s) => {
                    Some(Isolation::parse(s).context("--isolation must be shared or dedicated")?)
                }
            };
            let input = NewTenant {
                name: a.name.clone(),
                slug: a.slug.clone(),
                plan: Some(a.plan.clone()),
                isolation,
                organization_id: None,
                domain: a.domain.clone(),
                metadata: None,
                branding: None,
            };
            print_tenant(
                &services
                    .tenants
                    .create_tenant(&operator, input)
                    .await
                    .map_err(describe)?,
            )
        }
        TenantCommand::List { status, plan, q } => {
            let status = match status.as_deref() {
                None => None,
                Some(s) => Some(
                    TenantStatus::parse(s)
                        .context("--status must be active, suspended, deleting or deleted")?,
                ),
            };
            let filter = TenantFilter {
                status,
                plan: plan.clone(),
                organization_id: None,
                q: q.clone(),
            };
            println!(
                "{:<36}  {:<24} {:<10} {:<10} {:<9}  name",
                "id", "slug", "plan", "status", "isolation"
            );
            for t in all_tenants(services, filter).await? {
                println!(
                    "{:<36}  {:<24} {:<10} {:<10} {:<9}  {}",
                    t.id,
                    t.slug,
                    t.plan,
                    t.status.as_str(),
                    t.isolation.as_str(),
                    t.name
                );
            }
            Ok(())
        }
        TenantCommand::Show { tenant } => print_tenant(
            &services
                .core
                .administered_tenant(&operator, tenant)
                .await
                .map_err(describe)?,
        ),
        TenantCommand::Suspend { tenant } => print_tenant(
            &services
                .tenants
                .set_tenant_status(&operator, tenant, TenantStatus::Suspended)
                .await
                .map_err(describe)?,
        ),
        TenantCommand::Activate { tenant } => print_tenant(
            &services
                .tenants
                .set_tenant_status(&operator, tenant, TenantStatus::Active)
                .await
                .map_err(describe)?,
        ),
        TenantCommand::Delete { tenant } => {
            let job = services
                .tenants
                .delete_tenant(&operator, tenant)
                .await
                .map_err(describe)?;
            follow(services, job, "delete").await?;
            println!("deleted {tenant}");
            Ok(())
        }
        TenantCommand::Export {
            tenant,
            output,
            format,
            data_types,
        } => {
            let request = ExportRequest {
                data_types: data_types
                    .as_ref()
                    .map(|types| {
                        types
                            .iter()
                            .map(|t| serde_json::from_value(serde_json::json!(t.trim())))
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .transpose()
                    .context(
                        "--data-types: tenant, config, users, collections, records, usage, audit",
                    )?,
                format: serde_json::from_value(serde_json::json!(format))
                    .context("--format must be ndjson or json")?,
            };
            let job = services
                .tenants
                .start_export(&operator, tenant, request)
                .await
                .map_err(describe)?;
            let job = follow(services, job.id, "export").await?;
            let ext = job.params["format"].as_str().unwrap_or("ndjson");
            let path = services
                .tenants
                .jobs
                .export_path(job.tenant_id, job.id, ext);
            match output {
                Some(out) => {
                    std::fs::copy(&path, out)
                        .with_context(|| format!("copying the export to {}", out.display()))?;
                    println!("exported {tenant} to {}", out.display());
                }
                None => println!("exported {tenant} to {}", path.display()),
            }
            Ok(())
        }
        TenantCommand::Import { tenant, file } => {
            let target = services
                .core
                .administered_tenant(&operator, tenant)
                .await
                .map_err(describe)?;
            let file = std::fs::canonicalize(file)
                .with_context(|| format!("reading {}", file.display()))?;
            let job = services
                .tenants
                .start_import(&operator, &target, file, false)
                .await
                .map_err(describe)?;
            follow(services, job.id, "import").await?;
            println!("imported into {tenant}");
            Ok(())
        }
        TenantCommand::Move {
            tenant,
            isolation,
            server,
        } => {
            let isolation = match isolation.as_deref() {
                None => None,
                Some(s) => {
                    Some(Isolation::parse(s).context("--isolation must be shared or dedicated")?)
                }
            };
            let request = MoveRequest {
                isolation,
                server: server.clone(),
            };
            let job = services
                .tenants
                .start_move(&operator, tenant, request)
                .await
                .map_err(describe)?;
            follow(services, job.id, "move").await?;
            let moved = services
                .core
                .administered_tenant(&operator, tenant)
                .await
                .map_err(describe)?;
            println!(
                "moved {tenant} to {}{}",
                moved.isolation.as_str(),
                moved
                    .placement
                    .map(|p| format!(" on {p}"))
                    .unwrap_or_default()
            );
            Ok(())
        }
        TenantCommand::Jobs { tenant, status } => {
            let status = match status.as_deref() {
                None => None,
                Some(s) => Some(
                    JobStatus::parse(s)
                        .context("--status must be queued, running, succeeded or failed")?,
                ),
            };
            let query = JobQuery {
                tenant: tenant.clone(),
                status,
            };
            let page = PageRequest {
                after: None,
                limit: 500,
            };
            println!(
                "{:<36}  {:<36}  {:<7} {:<9} {:>5}  error",
                "id", "tenant", "kind", "status", "done"
            );
            for j in services
                .tenants
                .list_jobs(&operator, query, &page)
                .await
                .map_err(describe)?
            {
                println!(
                    "{:<36}  {:<36}  {:<7} {:<9} {:>4.0}%  {}",
                    j.id,
                    j.tenant_id,
                    j.kind.as_str(),
                    j.status.as_str(),
                    j.progress * 100.0,
                    j.error.unwrap_or_default()
                );
            }
            Ok(())
        }
    }
}

/// Runs a job to its end in this process (or waits for the server that
/// took it): a progress bar on a terminal, a line per tenth otherwise.
/// Fails if the job failed.
pub(super) async fn follow(
    services: &Arc<Services>,
    id: tenantry::JobId,
    what: &str,
) -> anyhow::Result<Job> {
    use std::io::IsTerminal;
    let terminal = std::io::stderr().is_terminal();
    let bar = crate::migrate::progress_bar(if terminal { 1000 } else { 0 }, what);
    let mut shown = 0;
    let job = crate::jobs::run_to_end(services, id, |p| {
        let per_mille = (p.clamp(0.0, 1.0) * 1000.0) as u64;
        bar.set_position(per_mille);
        if !terminal && per_mille / 100 > shown {
            shown = per_mille / 100;
            eprintln!("{what}: {}%", shown * 10);
        }
    })
    .await?;
    bar.finish_and_clear();
    match job.status {
        JobStatus::Succeeded => Ok(job),
        _ => anyhow::bail!(
            "{what} job {id} failed: {}",
            job.error.as_deref().unwrap_or("unknown error")
        ),
    }
}
