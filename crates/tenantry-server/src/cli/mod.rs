//! The command line. Every command calls the same services as the HTTP API.

mod tenants;

use crate::app::{App, open_services, shutdown_signal};
use crate::settings::{Overrides, Settings};
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use tenantry::Role;
use tenants::{tenant_command, verify_audit};
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
                for p in services.core.list_plans().await? {
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
                    .identity
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
