//! The command line. Every command calls the same services as the HTTP API.

use crate::app::{App, open_services, shutdown_signal};
use crate::control::jobs::{ExportRequest, JobQuery, MoveRequest};
use crate::control::tenants::NewTenant;
use crate::control::{Services, console_operator};
use crate::settings::{Overrides, Settings};
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tenantry::job::{Job, JobStatus};
use tenantry::store::{PageRequest, TenantFilter};
use tenantry::{Isolation, Role, Tenant, TenantStatus};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(name = "tenantry", version, about = "Multi-tenant SaaS backend")]
pub struct Cli {
    /// Configuration file.
    #[arg(long, global = true, default_value = "tenantry.toml")]
    pub config: PathBuf,
    /// Where SQLite files and keys live (overrides TENANTRY_DATA_DIR).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// Control store URL (overrides TENANTRY_DATABASE_URL).
    #[arg(long, global = true)]
    pub database_url: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server.
    Serve {
        /// Address to listen on (overrides TENANTRY_LISTEN).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Apply pending migrations first (as `tenantry migrate` does).
        #[arg(long)]
        migrate: bool,
    },
    /// Bring the control store, the shared tier and every dedicated tenant
    /// database to this binary's schema (resumable; failures are reported
    /// per tenant without stopping the others).
    Migrate {
        /// Tenant databases migrated at once.
        #[arg(long, default_value_t = 8)]
        parallel: usize,
    },
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Inspect plans.
    #[command(subcommand)]
    Plan(PlanCommand),
    /// Manage platform administrators.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Check the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the hash chains (the platform's and every live tenant's, or
    /// one tenant's) and report the first broken link; exits 1 if any.
    Verify {
        /// Tenant id or slug.
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant.
    Create(CreateTenantArgs),
    /// List tenants.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        plan: Option<String>,
        /// Search name and slug.
        #[arg(long)]
        q: Option<String>,
    },
    /// Show one tenant (id or slug) as JSON.
    Show { tenant: String },
    /// Suspend a tenant.
    Suspend { tenant: String },
    /// Re-activate a suspended tenant.
    Activate { tenant: String },
    /// Delete a tenant and purge its data (waits for the purge job).
    Delete { tenant: String },
    /// Export everything a tenant owns to a file (waits for the job).
    Export {
        tenant: String,
        /// Where to write the export; the data dir's copy is kept too.
        #[arg(long)]
        output: Option<PathBuf>,
        /// `ndjson` (default) or `json`.
        #[arg(long, default_value = "ndjson")]
        format: String,
        /// Comma-separated: tenant, config, users, collections, records, usage, audit.
        #[arg(long, value_delimiter = ',')]
        data_types: Option<Vec<String>>,
    },
    /// Restore an export file into an empty tenant (waits for the job).
    Import {
        tenant: String,
        #[arg(long)]
        file: PathBuf,
    },
    /// Move a tenant's data to another tier or server, online (waits for the job).
    Move {
        tenant: String,
        /// `shared` or `dedicated`.
        #[arg(long)]
        isolation: Option<String>,
        /// A `[[placement.servers]]` name.
        #[arg(long)]
        server: Option<String>,
    },
    /// List jobs, newest first.
    Jobs {
        /// Tenant id or slug.
        #[arg(long)]
        tenant: Option<String>,
        /// `queued`, `running`, `succeeded` or `failed`.
        #[arg(long)]
        status: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct CreateTenantArgs {
    #[arg(long)]
    pub name: String,
    #[arg(long)]
    pub slug: String,
    #[arg(long, default_value = "basic")]
    pub plan: String,
    /// `shared` or `dedicated`; the plan's default when absent.
    #[arg(long)]
    pub isolation: Option<String>,
    #[arg(long)]
    pub domain: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum PlanCommand {
    /// List plans with their limits.
    List,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create a platform super-admin.
    Create {
        #[arg(long)]
        email: String,
        /// Password; read from TENANTRY_NEW_ADMIN_PASSWORD when not given.
        #[arg(long, env = "TENANTRY_NEW_ADMIN_PASSWORD", hide_env_values = true)]
        password: String,
        #[arg(long, default_value = "Platform admin")]
        name: String,
    },
}

impl Cli {
    fn settings(&self, listen: Option<SocketAddr>) -> anyhow::Result<Settings> {
        let overrides = Overrides {
            listen,
            data_dir: self.data_dir.clone(),
            database_url: self.database_url.clone(),
        };
        Settings::load(&self.config, &overrides).context("reading configuration")
    }

    pub async fn run(self) -> anyhow::Result<()> {
        match &self.command {
            Command::Serve { listen, migrate } => {
                let mut settings = self.settings(*listen)?;
                settings.migrate |= *migrate;
                let _flush_logs = init_logging(&settings.log);
                serve(settings).await
            }
            Command::Migrate { parallel } => {
                let mut settings = self.settings(None)?;
                settings.migrate = true;
                settings.migrate_parallelism = *parallel;
                let _flush_logs = init_logging(&settings.log);
                let started = std::time::Instant::now();
                open_services(&settings).await?;
                println!(
                    "schema up to date: control store, shared tier and every dedicated tenant ({:.1}s)",
                    started.elapsed().as_secs_f64()
                );
                Ok(())
            }
            Command::Tenant(cmd) => {
                let services = open_services(&self.settings(None)?).await?;
                tenant_command(&services, cmd).await
            }
            Command::Plan(PlanCommand::List) => {
                let services = open_services(&self.settings(None)?).await?;
                println!(
                    "{:<12} {:>10} {:>16} {:>14} {:>8}  isolation",
                    "code", "max_users", "max_storage", "requests/day", "req/s"
                );
                for p in services.list_plans().await? {
                    let show = |v: Option<u64>| v.map_or("unlimited".to_owned(), |n| n.to_string());
                    println!(
                        "{:<12} {:>10} {:>16} {:>14} {:>8}  {}",
                        p.code,
                        show(p.limits.max_users),
                        show(p.limits.max_storage_bytes),
                        show(p.limits.api_requests_per_day),
                        show(p.limits.requests_per_second),
                        p.default_isolation.as_str()
                    );
                }
                Ok(())
            }
            Command::Audit(AuditCommand::Verify { tenant }) => {
                let services = open_services(&self.settings(None)?).await?;
                verify_audit(&services, tenant.as_deref()).await
            }
            Command::Admin(AdminCommand::Create {
                email,
                password,
                name,
            }) => {
                let services = open_services(&self.settings(None)?).await?;
                let user = services
                    .create_platform_user(
                        &crate::control::console_operator(),
                        email,
                        password.clone(),
                        name,
                        Role::SuperAdmin,
                        None,
                    )
                    .await
                    .map_err(describe)?;
                println!("created super-admin {} ({})", user.email, user.id);
                Ok(())
            }
        }
    }
}

/// Service errors carry field details the CLI should print in full.
fn describe(e: crate::error::Error) -> anyhow::Error {
    match e {
        crate::error::Error::Validation(errors) => {
            let lines: Vec<String> = errors
                .iter()
                .map(|f| format!("{}: {}", f.field, f.message))
                .collect();
            anyhow::anyhow!("invalid input: {}", lines.join("; "))
        }
        other => anyhow::anyhow!(other),
    }
}

fn print_tenant(t: &Tenant) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(t)?);
    Ok(())
}

/// Every tenant the filter selects, page by page.
async fn all_tenants(services: &Services, filter: TenantFilter) -> anyhow::Result<Vec<Tenant>> {
    let mut page = PageRequest {
        after: None,
        limit: 500,
    };
    let mut all = Vec::new();
    loop {
        let rows = services
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
async fn verify_audit(services: &Services, tenant: Option<&str>) -> anyhow::Result<()> {
    let mut reports = Vec::new();
    match tenant {
        Some(tenant) => {
            let t = services
                .administered_tenant(&console_operator(), tenant)
                .await
                .map_err(describe)?;
            reports.push((
                format!("tenant {}", t.slug),
                services.verify_tenant_chains(&t).await?,
            ));
        }
        None => {
            reports.push((
                "platform".to_owned(),
                services.verify_platform_chain().await?,
            ));
            let tenants = all_tenants(services, TenantFilter::default()).await?;
            let bar = crate::migrate::progress_bar(tenants.len() as u64, "verifying tenants");
            for t in tenants {
                let report = services.verify_tenant_chains(&t).await?;
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

async fn tenant_command(services: &Arc<Services>, cmd: &TenantCommand) -> anyhow::Result<()> {
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
                .administered_tenant(&operator, tenant)
                .await
                .map_err(describe)?,
        ),
        TenantCommand::Suspend { tenant } => print_tenant(
            &services
                .set_tenant_status(&operator, tenant, TenantStatus::Suspended)
                .await
                .map_err(describe)?,
        ),
        TenantCommand::Activate { tenant } => print_tenant(
            &services
                .set_tenant_status(&operator, tenant, TenantStatus::Active)
                .await
                .map_err(describe)?,
        ),
        TenantCommand::Delete { tenant } => {
            let job = services
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
                .start_export(&operator, tenant, request)
                .await
                .map_err(describe)?;
            let job = follow(services, job.id, "export").await?;
            let ext = job.params["format"].as_str().unwrap_or("ndjson");
            let path = services.jobs.export_path(job.tenant_id, job.id, ext);
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
                .administered_tenant(&operator, tenant)
                .await
                .map_err(describe)?;
            let file = std::fs::canonicalize(file)
                .with_context(|| format!("reading {}", file.display()))?;
            let job = services
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
                .start_move(&operator, tenant, request)
                .await
                .map_err(describe)?;
            follow(services, job.id, "move").await?;
            let moved = services
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
async fn follow(services: &Arc<Services>, id: tenantry::JobId, what: &str) -> anyhow::Result<Job> {
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

/// JSON lines on stdout, written by a background thread so that a request
/// never waits on the write itself. Not lossy: when the thread falls behind,
/// logging waits as it did before. Keep the guard: dropping it flushes.
fn init_logging(filter: &str) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        // A bounded queue: at most a few MB of lines in memory.
        .buffered_lines_limit(16_384)
        .finish(std::io::stdout());
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_env_filter(filter)
        .with_writer(writer)
        .try_init();
    guard
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let listen = settings.listen;
    let app = App::build(settings).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    tracing::info!(address = %listener.local_addr()?, "tenantry listening");
    app.serve(listener, shutdown_signal()).await?;
    tracing::info!("stopped cleanly");
    Ok(())
}
