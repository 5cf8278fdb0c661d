//! The admin console in a real browser (`tests/browser/console.mjs`:
//! playwright-core driving Debian's Chromium), against `tenantry serve`
//! started as users start it, on SQLite and on PostgreSQL. `setup.sh`
//! installs the browser and playwright-core when they are missing; when
//! that fails, so does the test (never a skip). Screenshots of the main
//! pages go to `<target>/tmp/console-screenshots/<engine>/` on every run.
//!
//! A binary of its own: cargo runs test binaries one at a time, so the
//! browser never competes with the timing-sensitive suites for the cores.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ADMIN_EMAIL: &str = "console-admin@example.com";
const ADMIN_PASSWORD: &str = "Console-Admin-Passw0rd!";

/// One browser at a time: two on two cores made each one's waits flaky.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn run(cmd: &mut Command, what: &str) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("{what}: cannot start it: {e}"));
    assert!(status.success(), "{what} failed ({status})");
}

/// `tenantry serve` on a free port, once it answers `/readyz`.
async fn serve(data: &Path, database_url: Option<String>) -> (Child, String) {
    let port = tenantry_test_postgres::free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenantry"));
    cmd.arg("serve")
        .env("TENANTRY_LISTEN", format!("127.0.0.1:{port}"))
        .env("TENANTRY_DATA_DIR", data)
        .env("TENANTRY_ADMIN_EMAIL", ADMIN_EMAIL)
        .env("TENANTRY_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env_remove("TENANTRY_DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(url) = database_url {
        cmd.env("TENANTRY_DATABASE_URL", url);
    }
    let child = cmd.spawn().expect("spawn tenantry serve");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match client.get(format!("{base}/readyz")).send().await {
            Ok(r) if r.status() == 200 => return (child, base),
            _ if Instant::now() > deadline => panic!("tenantry serve never became ready"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn console_in_a_browser(engine: &str) {
    let _one = ONE_BROWSER.lock().await;
    run(
        Command::new("bash").arg(scripts().join("setup.sh")),
        "installing the browser test's tools (tests/browser/setup.sh)",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let url = match engine {
        "postgres" => Some(tenantry_test_postgres::database_url_for(dir.path()).await),
        _ => None,
    };
    let (mut server, base) = serve(dir.path(), url).await;
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("console-screenshots")
        .join(engine);
    let mut node = Command::new("node");
    node.current_dir(scripts())
        .arg("console.mjs")
        .arg(&base)
        .arg(ADMIN_EMAIL)
        .arg(ADMIN_PASSWORD)
        .arg(&shots);
    let outcome = node.status();
    let _ = server.kill();
    let _ = server.wait();
    let status = outcome.expect("node (the console's browser test runs on it)");
    assert!(
        status.success(),
        "the console's browser test failed on {engine} ({status}); screenshots in {}",
        shots.display()
    );
    eprintln!("console screenshots: {}", shots.display());
}

#[tokio::test]
async fn the_console_works_in_a_browser_on_sqlite() {
    console_in_a_browser("sqlite").await;
}

#[tokio::test]
async fn the_console_works_in_a_browser_on_postgres() {
    console_in_a_browser("postgres").await;
}
