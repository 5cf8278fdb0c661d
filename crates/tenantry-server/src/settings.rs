//! Configuration: built-in defaults → `tenantry.toml` → `TENANTRY_*`
//! environment variables (`__` for nesting) → command-line flags.

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where SQLite files and key files live.
    pub data_dir: PathBuf,
    /// Where the control store and the shared tier live: `sqlite://<file>`
    /// (default: `control.db` in the data dir) or `postgres://…` (the owner
    /// role, which runs migrations; requests run as `database_runtime_role`).
    #[serde(skip_serializing)]
    pub database_url: Option<SecretString>,
    /// PostgreSQL: the role requests run as (no superuser, no BYPASSRLS, owns nothing).
    pub database_runtime_role: String,
    /// PostgreSQL: that role's password, where authentication needs one.
    #[serde(skip_serializing)]
    pub database_runtime_password: Option<SecretString>,
    /// PostgreSQL: connections of the main database's runtime pool.
    pub database_max_connections: u32,
    /// PostgreSQL: cap on connections held by dedicated tenants' pools together.
    pub dedicated_max_connections: u32,
    /// PostgreSQL: how long a request waits for a connection before 503, in milliseconds.
    pub database_acquire_timeout_ms: u64,
    /// PostgreSQL: the longest a statement of the runtime role runs (then
    /// 503), in milliseconds.
    pub database_statement_timeout_ms: u64,
    /// PostgreSQL servers tenants are placed across (`[[placement.servers]]`
    /// with `name`, `url`, `weight`); empty: everything in the main database.
    pub placement: Placement,
    /// Apply pending schema migrations at start (control store, shared tier
    /// and every dedicated tenant); otherwise a schema that is behind stops
    /// the start with a message to run `tenantry migrate`.
    pub migrate: bool,
    /// Dedicated tenant databases migrated at once.
    pub migrate_parallelism: usize,
    /// The platform super-admin created at first start.
    pub admin_email: Option<String>,
    #[serde(skip_serializing)]
    pub admin_password: Option<SecretString>,
    /// `<slug>.<base_domain>` identifies a tenant; unset turns that off.
    pub base_domain: Option<String>,
    /// `false` = single-tenant mode (every request in tenant `default`).
    pub multi_tenant: bool,
    /// Shared rate limits and caches across instances: the plans' request
    /// rates hold across all instances together (unset: per instance).
    #[serde(skip_serializing)]
    pub redis_url: Option<SecretString>,
    /// Tenants with `/metrics` series of their own: the busiest this many
    /// (every tenant would make one series per tenant).
    pub metrics_top_tenants: usize,
    /// When set, `/metrics` answers only `Authorization: Bearer <token>`
    /// (its per-tenant series name the busiest tenants).
    #[serde(skip_serializing)]
    pub metrics_token: Option<SecretString>,
    /// Request body limit in bytes.
    pub max_body_bytes: usize,
    /// Time for the client to send a request's body, and again for the
    /// server to answer it (imports' uploads excepted), in milliseconds.
    pub request_timeout_ms: u64,
    /// Time for the client to send a request's headers, in milliseconds.
    pub header_read_timeout_ms: u64,
    /// Proxies whose `X-Forwarded-Host`, `X-Forwarded-For` and `Forwarded`
    /// are believed (the client address of per-address limits).
    pub trusted_proxies: Vec<IpAddr>,
    /// Log filter (tracing `EnvFilter` syntax).
    pub log: String,
    /// Failed logins for one account within the window before 429.
    pub login_max_failures: u32,
    /// Failed logins from one client address within the window before 429.
    pub login_max_failures_per_address: u32,
    /// The lockout window, in seconds.
    pub login_window_secs: u64,
    /// OTP codes one client address may request per hour.
    pub otp_sends_per_address_per_hour: u32,
    /// OTP codes sent for one tenant per hour.
    pub otp_sends_per_tenant_per_hour: u32,
    /// Enforce the plans' per-tenant request rates (`false` only for test
    /// suites that exercise other behaviour at full speed).
    pub rate_limits: bool,
    /// Requests one tenant may have in flight; more queue, then get 429.
    pub max_concurrent_per_tenant: usize,
    /// How long a request over that cap queues before the 429, in milliseconds.
    pub tenant_queue_wait_ms: u64,
    /// Dedicated tenant databases kept open at once on SQLite (least recently
    /// used closed first). An open one costs its connections' memory (about
    /// 0.3 MB in the load benchmark), no thread.
    pub max_open_tenant_databases: u64,
    /// Jobs (exports, imports, moves, deletions) run at once by this instance.
    pub job_workers: usize,
    /// A running job whose worker has not been heard from for this long
    /// (seconds) is taken over by another worker: its worker died.
    pub job_lease_secs: u64,
    /// Largest import file accepted, in bytes (an upload past it is refused
    /// with 413; a file given to the CLI fails its job).
    pub import_max_bytes: u64,
    /// How long a moved tenant's old copy is kept, sealed, before it is
    /// dropped, in milliseconds: instances that still have the old
    /// placement cached (for up to the resolver's 5 s) read it meanwhile.
    pub move_source_grace_ms: u64,
    /// How OTP codes are delivered: `log` or `webhook`.
    pub otp_sender: String,
    /// Where the `webhook` sender POSTs `{tenant, phone, code}`.
    #[serde(skip_serializing)]
    pub otp_webhook_url: Option<SecretString>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            database_url: None,
            database_runtime_role: "tenantry_app".to_owned(),
            database_runtime_password: None,
            database_max_connections: 16,
            dedicated_max_connections: 64,
            database_acquire_timeout_ms: 3000,
            database_statement_timeout_ms: 30_000,
            placement: Placement::default(),
            migrate: false,
            migrate_parallelism: 8,
            admin_email: None,
            admin_password: None,
            base_domain: None,
            multi_tenant: true,
            redis_url: None,
            metrics_top_tenants: 20,
            metrics_token: None,
            max_body_bytes: 1024 * 1024,
            request_timeout_ms: 30_000,
            header_read_timeout_ms: 10_000,
            trusted_proxies: Vec::new(),
            log: "info".to_owned(),
            login_max_failures: 5,
            login_max_failures_per_address: 50,
            login_window_secs: 15 * 60,
            otp_sends_per_address_per_hour: 10,
            otp_sends_per_tenant_per_hour: 1000,
            rate_limits: true,
            max_concurrent_per_tenant: 16,
            tenant_queue_wait_ms: 1000,
            max_open_tenant_databases: 1024,
            job_workers: 2,
            job_lease_secs: 30,
            import_max_bytes: 1 << 30,
            move_source_grace_ms: 10_000,
            otp_sender: "log".to_owned(),
            otp_webhook_url: None,
        }
    }
}

/// Where tenants' data may live beyond the main database.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Placement {
    pub servers: Vec<tenantry::placement::Server>,
}

/// Flags given on the command line; each overrides file and environment.
#[derive(Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
}

impl Settings {
    pub fn figment(config_file: &Path, overrides: &Overrides) -> Figment {
        Figment::from(Serialized::defaults(Settings::default()))
            .merge(Toml::file(config_file))
            .merge(Env::prefixed("TENANTRY_").split("__"))
            .merge(Serialized::defaults(overrides))
    }

    pub fn load(config_file: &Path, overrides: &Overrides) -> anyhow::Result<Self> {
        Ok(Self::figment(config_file, overrides).extract()?)
    }

    /// Which engine holds the control store and the shared tier.
    pub fn database(&self) -> anyhow::Result<Database> {
        let Some(url) = exposed(&self.database_url) else {
            return Ok(Database::Sqlite(self.data_dir.join("control.db")));
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Database::Postgres(url.to_owned()));
        }
        match url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            Some(path) => Ok(Database::Sqlite(PathBuf::from(path))),
            None => anyhow::bail!(
                "TENANTRY_DATABASE_URL must start with sqlite:// or postgres://, got {:?}",
                without_password(url)
            ),
        }
    }
}

/// A secret setting's value, for the one place that uses it. Secrets are
/// `SecretString`s so that `Settings` (Debug, logs, panics) never prints
/// them; serializing skips them too.
pub fn exposed(secret: &Option<SecretString>) -> Option<&str> {
    secret.as_ref().map(ExposeSecret::expose_secret)
}

/// A URL fit for a message: its password, if any, replaced by `***`.
pub fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    // The userinfo ends at the last '@' before the path.
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) if rest[..at].contains(':') => {
            let user = rest[..at].split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***{}", &rest[at..])
        }
        _ => url.to_owned(),
    }
}

/// The engine of the control store and the shared tier.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// The control store's SQLite file (tenant data lives beside it in the data dir).
    Sqlite(PathBuf),
    /// A PostgreSQL URL of the owner role.
    Postgres(String),
}

/// The URL may carry the owner role's password: it is never printed.
impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Database::Postgres(_) => f.debug_tuple("Postgres").field(&"[redacted]").finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::result_large_err)] // figment's Jail closures return its own large error
    use super::*;
    use figment::Jail;

    #[test]
    fn urls_in_messages_carry_no_password() {
        assert_eq!(
            without_password("mysql://root:s3cret@db:3306/app"),
            "mysql://root:***@db:3306/app"
        );
        assert_eq!(
            without_password("postgres://u:p@ss@host/db?x=@"),
            "postgres://u:***@host/db?x=@"
        );
        assert_eq!(without_password("postgres://host/db"), "postgres://host/db");
        assert_eq!(
            without_password("postgres://u@host/db"),
            "postgres://u@host/db"
        );
        let bad = Settings {
            database_url: Some("mysql://root:s3cret@db/app".into()),
            ..Settings::default()
        };
        let err = bad.database().expect_err("refused").to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn settings_never_print_their_secrets() {
        Jail::expect_with(|jail| {
            jail.set_env("TENANTRY_DATABASE_URL", "postgres://owner:db-s3cret@h/app");
            jail.set_env("TENANTRY_DATABASE_RUNTIME_PASSWORD", "rt-s3cret");
            jail.set_env("TENANTRY_ADMIN_PASSWORD", "admin-s3cret");
            jail.set_env("TENANTRY_REDIS_URL", "redis://:redis-s3cret@h");
            jail.set_env("TENANTRY_METRICS_TOKEN", "metrics-s3cret");
            jail.set_env("TENANTRY_OTP_WEBHOOK_URL", "https://h/hook?key=otp-s3cret");
            let s = Settings::load(Path::new("absent.toml"), &Overrides::default())
                .map_err(|e| e.to_string())?;
            // Read as given…
            assert_eq!(exposed(&s.admin_password), Some("admin-s3cret"));
            assert_eq!(exposed(&s.redis_url), Some("redis://:redis-s3cret@h"));
            // …and never shown.
            let database = s.database().map_err(|e| e.to_string())?;
            assert!(matches!(&database, Database::Postgres(url) if url.contains("db-s3cret")));
            let shown = format!(
                "{s:?} {database:?} {}",
                serde_json::to_string(&s).map_err(|e| e.to_string())?
            );
            assert!(!shown.contains("s3cret"), "{shown}");
            Ok(())
        });
    }

    #[test]
    fn flags_beat_environment_which_beats_the_file() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "tenantry.toml",
                "listen = \"127.0.0.1:9000\"\ndata_dir = \"/from/file\"\nmax_body_bytes = 10\nmulti_tenant = false",
            )?;
            jail.set_env("TENANTRY_DATA_DIR", "/from/env");
            jail.set_env("TENANTRY_MAX_BODY_BYTES", "20");
            let flags = Overrides {
                data_dir: Some(PathBuf::from("/from/flag")),
                ..Overrides::default()
            };
            let s =
                Settings::load(Path::new("tenantry.toml"), &flags).map_err(|e| e.to_string())?;
            assert_eq!(s.listen.port(), 9000);
            assert_eq!(s.data_dir, PathBuf::from("/from/flag"));
            assert_eq!(s.max_body_bytes, 20);
            assert!(!s.multi_tenant);
            Ok(())
        });
    }

    #[test]
    fn defaults_apply_without_any_configuration() {
        Jail::expect_with(|_| {
            let s = Settings::load(Path::new("absent.toml"), &Overrides::default())
                .map_err(|e| e.to_string())?;
            assert_eq!(s.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
            assert_eq!(s.data_dir, PathBuf::from("./data"));
            assert_eq!(s.max_body_bytes, 1_048_576);
            assert!(s.multi_tenant);
            Ok(())
        });
    }
}
