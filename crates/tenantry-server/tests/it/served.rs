//! The real `tenantry serve` as a child process, on this test binary's
//! engine: for tests of what only the shipped binary shows (kills,
//! connections).

use crate::pg::free_port;
use crate::support::{ADMIN_EMAIL, ADMIN_PASSWORD, Http, settings_for};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    pub dir: tempfile::TempDir,
    database_url: Option<String>,
    /// Settings as `TENANTRY_*` variables, on top of the defaults.
    env: Vec<(String, String)>,
    child: Option<Child>,
    pub http: Http,
}

impl Server {
    pub async fn start(dir: tempfile::TempDir, env: &[(&str, &str)]) -> Self {
        let database_url =
            tenantry_server::settings::exposed(&settings_for(dir.path()).await.database_url)
                .map(str::to_owned);
        let mut server = Self {
            dir,
            database_url,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            child: None,
            http: Http::new(String::new()),
        };
        server.restart().await;
        server
    }

    /// Where it listens, as `host:port`.
    pub fn addr(&self) -> &str {
        self.http
            .base
            .strip_prefix("http://")
            .unwrap_or(&self.http.base)
    }

    /// Starts `tenantry serve` (again) and waits until it is ready.
    pub async fn restart(&mut self) {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenantry"));
        cmd.current_dir(self.dir.path())
            .env_remove("TENANTRY_DATABASE_URL")
            .env("TENANTRY_DATA_DIR", self.dir.path())
            .env("TENANTRY_ADMIN_EMAIL", ADMIN_EMAIL)
            .env("TENANTRY_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(url) = &self.database_url {
            cmd.env("TENANTRY_DATABASE_URL", url);
        }
        self.child = Some(cmd.spawn().expect("spawn tenantry"));
        self.http = Http::new(format!("http://127.0.0.1:{port}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        let ready = format!("{}/readyz", self.http.base);
        while !matches!(self.http.client.get(&ready).send().await, Ok(r) if r.status() == 200) {
            assert!(Instant::now() < deadline, "the server never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: no shutdown hook runs, nothing is flushed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill");
            child.wait().expect("wait");
        }
    }

    pub async fn admin(&self) -> String {
        let res = self.http.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        assert_eq!(res.status, 200, "{}", res.text);
        res.body["access_token"].as_str().expect("token").to_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
