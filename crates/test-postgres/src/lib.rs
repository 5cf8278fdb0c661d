//! PostgreSQL for the tests: the machine's server when it runs one
//! (`TENANTRY_TEST_POSTGRES_URL`, default 127.0.0.1:5432 as `postgres`),
//! otherwise a throwaway cluster; under `CI=true` a missing server fails the
//! run instead. Every app gets its own database, named after its data dir
//! so that a restarted app finds its data again.
//!
//! A crate of its own so that the library's store conformance suite and
//! the server's behavioural suites find the same server the same way.

use sqlx::{Connection, PgConnection};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use tokio::sync::OnceCell;

/// Databases the tests create start with this, then the test process id.
const PREFIX: &str = "tt_";

static SERVER: OnceCell<String> = OnceCell::const_new();

/// The owner URL of the server (without database), found or started once per process.
pub async fn server_url() -> &'static str {
    SERVER
        .get_or_init(|| async {
            let url = std::env::var("TENANTRY_TEST_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
            let url = match PgConnection::connect(&format!("{url}/postgres")).await {
                Ok(conn) => {
                    let _ = conn.close().await;
                    url
                }
                Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
                    panic!("CI=true and PostgreSQL at {url} is unreachable: {e}")
                }
                Err(_) => {
                    // Lives for the whole test process; its directory is
                    // left behind on purpose (the cluster is still running).
                    let cluster = Cluster::start(free_port()).await;
                    let url = cluster.url();
                    std::mem::forget(cluster);
                    url
                }
            };
            // Dropping a database takes a checkpoint: after a full run there
            // are dozens. A thread of its own clears them while tests run
            // (what a short process leaves, the next one finishes).
            let stale = url.clone();
            std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    rt.block_on(drop_stale_databases(&stale));
                }
            });
            url
        })
        .await
}

/// The database URL of the app whose data dir is `dir`.
pub async fn database_url_for(dir: &Path) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut h);
    format!(
        "{}/{PREFIX}{}_{:016x}",
        server_url().await,
        std::process::id(),
        h.finish()
    )
}

/// Drops what earlier test processes (no longer running) left behind.
async fn drop_stale_databases(url: &str) {
    let Ok(mut conn) = PgConnection::connect(&format!("{url}/postgres")).await else {
        return;
    };
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'tt\\_%'")
            .fetch_all(&mut conn)
            .await
            .unwrap_or_default();
    for name in names {
        let pid = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        let alive = pid.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await;
        }
    }
    let _ = conn.close().await;
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A throwaway PostgreSQL cluster (initdb + pg_ctl), stopped when dropped.
pub struct Cluster {
    dir: tempfile::TempDir,
    pub port: u16,
}

impl Cluster {
    pub async fn start(port: u16) -> Self {
        let dir = tempfile::tempdir().expect("cluster dir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("data dir");
        as_postgres_owner(dir.path());
        as_postgres_owner(&data);
        run(Command::new(bin("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data));
        let cluster = Self { dir, port };
        cluster.start_server();
        cluster
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start_server(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        run(Command::new(bin("pg_ctl"))
            .args(["-w", "-l"])
            .arg(self.dir.path().join("log"))
            .args(["-o", &options, "-D"])
            .arg(self.data())
            .arg("start"));
    }

    /// Stops the server at once (connections are cut, as in a crash or restart).
    pub fn stop_server(&self) {
        run(Command::new(bin("pg_ctl"))
            .args(["-w", "-m", "immediate", "-D"])
            .arg(self.data())
            .arg("stop"));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = as_postgres(
            Command::new(bin("pg_ctl"))
                .args(["-m", "immediate", "-D"])
                .arg(self.data())
                .arg("stop"),
        )
        .output();
    }
}

/// The PostgreSQL binaries: on the PATH, or in Debian's versioned directory.
fn bin(name: &str) -> PathBuf {
    let in_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.exists())
    });
    in_path
        .or_else(|| {
            let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
                .ok()?
                .filter_map(|e| e.ok().map(|e| e.path().join("bin").join(name)))
                .filter(|p| p.exists())
                .collect();
            dirs.sort();
            dirs.pop()
        })
        .unwrap_or_else(|| panic!("PostgreSQL's {name} is not installed"))
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// PostgreSQL refuses to run as root: run its tools as `postgres` then.
fn as_postgres(cmd: &mut Command) -> Command {
    if is_root() {
        let mut wrapped = Command::new("runuser");
        wrapped
            .args(["-u", "postgres", "--"])
            .arg(cmd.get_program())
            .args(cmd.get_args());
        wrapped
    } else {
        let mut same = Command::new(cmd.get_program());
        same.args(cmd.get_args());
        same
    }
}

pub fn as_postgres_owner(path: &Path) {
    if is_root() {
        run_plain(Command::new("chown").arg("postgres:postgres").arg(path));
    }
}

fn run(cmd: &mut Command) {
    run_plain(&mut as_postgres(cmd));
}

fn run_plain(cmd: &mut Command) {
    let out = cmd.output().expect("command runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
