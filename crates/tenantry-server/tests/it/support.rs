//! Spawning the real application for tests, and a small JSON client.
//!
//! Shared by both test binaries (SQLite and PostgreSQL); each uses part of it.
#![allow(dead_code)]

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use tempfile::TempDir;
use tenantry_server::{App, Settings};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const ADMIN_EMAIL: &str = "admin@test.example";
pub const ADMIN_PASSWORD: &str = "Admin-Passw0rd!";
/// Meets every built-in plan's password policy.
pub const USER_PASSWORD: &str = "User-Passw0rd!42";

/// The engine a test binary runs the suite against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestApp {
    /// Requests to the app (`app.get(…)`, `app.base`: through `Deref`).
    pub http: Http,
    pub dir: TempDir,
    pub app_state: tenantry_server::AppState,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// A response: status, headers and the body parsed as JSON (Null if not JSON).
pub struct Res {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Res {
    /// Asserts an RFC 9457 problem with this status and code.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text);
        let ct = self
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert_eq!(
            ct, "application/problem+json",
            "content type of {}",
            self.text
        );
        assert_eq!(self.body["code"], code, "body: {}", self.text);
        assert_eq!(self.body["status"], status, "body: {}", self.text);
        assert!(
            self.body["type"].is_string() && self.body["title"].is_string(),
            "{}",
            self.text
        );
        assert!(self.body["detail"].is_string(), "{}", self.text);
    }
}

pub fn test_settings(dir: &Path) -> Settings {
    Settings {
        listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.to_path_buf(),
        admin_email: Some(ADMIN_EMAIL.into()),
        admin_password: Some(ADMIN_PASSWORD.into()),
        // The limits have their own tests; elsewhere requests run at full speed.
        rate_limits: false,
        // A moved tenant's old copy need not wait for other instances' caches.
        move_source_grace_ms: 0,
        job_lease_secs: 3,
        ..Settings::default()
    }
}

/// The settings of the app on `dir`, on this binary's engine.
pub async fn settings_for(dir: &Path) -> Settings {
    let mut settings = test_settings(dir);
    if crate::BACKEND == Backend::Postgres {
        settings.database_url = Some(crate::pg::database_url_for(dir).await.into());
    }
    settings
}

/// Moves a dedicated tenant's own database out of the server's reach
/// (`away = true`) or back, as an operator's mistake or a lost volume would.
pub async fn move_dedicated_storage(settings: &Settings, tenant_id: &str, away: bool) {
    let (from, to) = if away { ("", ".away") } else { (".away", "") };
    match crate::BACKEND {
        Backend::Sqlite => {
            let base = settings.data_dir.join("tenants").join(tenant_id);
            for suffix in [".db", ".db-wal", ".db-shm"] {
                let src = format!("{}{suffix}{from}", base.display());
                if Path::new(&src).exists() {
                    std::fs::rename(&src, format!("{}{suffix}{to}", base.display()))
                        .expect("rename");
                }
            }
        }
        Backend::Postgres => {
            use sqlx::Connection;
            let mut conn =
                sqlx::PgConnection::connect(&format!("{}/postgres", crate::pg::server_url().await))
                    .await
                    .expect("connect");
            let pattern = format!(
                "%\\_{}{}",
                tenant_id.replace('-', ""),
                from.replace('.', "\\_")
            );
            let name: String =
                sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE datname LIKE $1")
                    .bind(pattern)
                    .fetch_one(&mut conn)
                    .await
                    .expect("tenant database");
            let renamed = format!(
                "{}{}",
                name.strip_suffix(&from.replace('.', "_")).unwrap_or(&name),
                to.replace('.', "_")
            );
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            )
            .bind(&name)
            .execute(&mut conn)
            .await
            .expect("terminate");
            sqlx::query(&format!("ALTER DATABASE {name} RENAME TO {renamed}"))
                .execute(&mut conn)
                .await
                .expect("rename");
        }
    }
}

impl TestApp {
    pub async fn spawn() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::spawn_with(dir, |_| {}).await
    }

    /// Starts the app on `dir` (fresh or reused), after `tweak` edits its settings.
    pub async fn spawn_with(dir: TempDir, tweak: impl FnOnce(&mut Settings)) -> Self {
        Self::spawn_with_clock(dir, Arc::new(tenantry::clock::SystemClock), tweak).await
    }

    /// Like `spawn_with`, on a clock the test controls.
    pub async fn spawn_with_clock(
        dir: TempDir,
        clock: Arc<dyn tenantry::clock::Clock>,
        tweak: impl FnOnce(&mut Settings),
    ) -> Self {
        let mut settings = settings_for(dir.path()).await;
        tweak(&mut settings);
        let app = App::build_with_clock(settings, clock)
            .await
            .expect("app builds");
        let router = app.router();
        Self::serve(dir, app, router).await
    }

    /// Serves `app` with `router` (its own, or one with extra routes) the
    /// way `tenantry serve` does: `App::serve_router` runs the job workers
    /// and the count flusher, and flushes when stopped.
    pub async fn serve(dir: TempDir, app: App, router: axum::Router) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let app_state = app.state.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            app.serve_router(router, listener, async {
                let _ = stopped.await;
            })
            .await
            .expect("serve");
        });
        Self {
            http: Http::new(base),
            dir,
            app_state,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops gracefully and hands back the data dir, for restart tests.
    pub async fn stop(self) -> TempDir {
        let TestApp {
            dir,
            stop,
            task,
            app_state,
            ..
        } = self;
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
        if let Some(task) = task {
            task.await.expect("the server stopped cleanly");
        }
        drop(app_state);
        dir
    }

    /// A connection to this app's PostgreSQL database as the owner role
    /// (which row-level security does not restrict: it is a superuser here).
    pub async fn pg_owner(&self) -> sqlx::PgConnection {
        use sqlx::Connection;
        let url = tenantry_server::settings::exposed(&self.app_state.settings.database_url)
            .expect("a PostgreSQL app");
        sqlx::PgConnection::connect(url)
            .await
            .expect("owner connection")
    }

    /// Rows naming `tenant_id` in every table of the app's databases that
    /// has a `tenant_id` column (the control store, the shared tier, the
    /// tenant's own database if it has one), read behind the server's back
    /// (PostgreSQL: as the owner, which row-level security does not hold).
    /// Tables with none are left out.
    pub async fn tenant_rows(&self, tenant_id: &str) -> Vec<(String, i64)> {
        let mut found = Vec::new();
        match crate::BACKEND {
            Backend::Sqlite => {
                use sqlx::Connection;
                let dir = self.dir.path();
                let mut files = vec![dir.join("control.db"), dir.join("shared.db")];
                let own = dir.join("tenants").join(format!("{tenant_id}.db"));
                if own.exists() {
                    files.push(own);
                }
                for file in files {
                    let url = format!("sqlite://{}?mode=ro", file.display());
                    let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("open");
                    let tables: Vec<String> = sqlx::query_scalar(
                        "SELECT m.name FROM sqlite_schema m, pragma_table_info(m.name) c
                         WHERE m.type = 'table' AND c.name = 'tenant_id'",
                    )
                    .fetch_all(&mut conn)
                    .await
                    .expect("tables");
                    for table in tables {
                        let n: i64 = sqlx::query_scalar(&format!(
                            "SELECT count(*) FROM {table} WHERE tenant_id = ?"
                        ))
                        .bind(tenant_id)
                        .fetch_one(&mut conn)
                        .await
                        .expect("count");
                        if n > 0 {
                            found.push((format!("{}:{table}", file.display()), n));
                        }
                    }
                }
            }
            Backend::Postgres => {
                let mut conn = self.pg_owner().await;
                let tables: Vec<String> = sqlx::query_scalar(
                    "SELECT table_schema || '.' || table_name FROM information_schema.columns
                     WHERE column_name = 'tenant_id' AND table_schema IN ('public', 'tenant_data')",
                )
                .fetch_all(&mut conn)
                .await
                .expect("tables");
                for table in tables {
                    let n: i64 = sqlx::query_scalar(&format!(
                        "SELECT count(*) FROM {table} WHERE tenant_id = $1::uuid"
                    ))
                    .bind(tenant_id)
                    .fetch_one(&mut conn)
                    .await
                    .expect("count");
                    if n > 0 {
                        found.push((table, n));
                    }
                }
                assert!(
                    !self.dedicated_storage_exists(tenant_id).await,
                    "the tenant's own database is gone too"
                );
            }
        }
        found
    }

    /// Whether the dedicated tenant's own database (file or PostgreSQL database) exists.
    pub async fn dedicated_storage_exists(&self, tenant_id: &str) -> bool {
        match crate::BACKEND {
            Backend::Sqlite => self
                .dir
                .path()
                .join("tenants")
                .join(format!("{tenant_id}.db"))
                .exists(),
            Backend::Postgres => {
                let hex = tenant_id.replace('-', "");
                let found: Option<i32> =
                    sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname LIKE '%\\_' || $1")
                        .bind(hex)
                        .fetch_optional(&mut self.pg_owner().await)
                        .await
                        .expect("pg_database");
                found.is_some()
            }
        }
    }

    pub async fn read(res: reqwest::Response) -> Res {
        Http::read(res).await
    }
}

impl std::ops::Deref for TestApp {
    type Target = Http;

    fn deref(&self) -> &Http {
        &self.http
    }
}

/// A JSON client of one running server: the in-process app, or the real
/// binary in the crash tests.
#[derive(Clone)]
pub struct Http {
    pub base: String,
    pub client: reqwest::Client,
}

impl Http {
    pub fn new(base: String) -> Self {
        Self {
            base,
            client: reqwest::Client::new(),
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Res {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request sent");
        Self::read(res).await
    }

    pub async fn read(res: reqwest::Response) -> Res {
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Res {
            status,
            headers,
            body,
            text,
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Res {
        self.call(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Res {
        self.call(Method::POST, path, token, Some(body)).await
    }

    pub async fn login(&self, email: &str, password: &str) -> Res {
        self.post(
            "/api/v1/auth/login",
            None,
            json!({"email": email, "password": password}),
        )
        .await
    }

    pub async fn admin_token(&self) -> String {
        let res = self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        assert_eq!(res.status, 200, "{}", res.text);
        res.body["access_token"].as_str().expect("token").to_owned()
    }

    /// Creates a user in `tenant` (as the super-admin, naming the tenant) and
    /// logs it in; returns the user's JSON and its access token.
    pub async fn tenant_user(
        &self,
        admin: &str,
        tenant: &str,
        email: &str,
        role: &str,
    ) -> (Value, String) {
        let res = self
            .client
            .post(format!("{}/api/v1/users", self.base))
            .bearer_auth(admin)
            .header("x-tenant-slug", tenant)
            .json(&json!({"email": email, "password": USER_PASSWORD, "name": email, "role": role}))
            .send()
            .await
            .expect("send");
        let res = Self::read(res).await;
        assert_eq!(res.status, 201, "{}", res.text);
        let login = self.tenant_login(tenant, email, USER_PASSWORD).await;
        assert_eq!(login.status, 200, "{}", login.text);
        (
            res.body,
            login.body["access_token"]
                .as_str()
                .expect("token")
                .to_owned(),
        )
    }

    pub async fn tenant_login(&self, tenant: &str, email: &str, password: &str) -> Res {
        self.post(
            "/api/v1/auth/login",
            None,
            json!({"email": email, "password": password, "tenant": tenant}),
        )
        .await
    }

    /// A request with extra headers.
    pub async fn call_with(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Res {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        Self::read(req.send().await.expect("send")).await
    }

    /// Polls a job until it has finished (at most 60 s) and returns it;
    /// panics if it failed.
    pub async fn wait_job(&self, token: &str, id: &Value) -> Value {
        let job = self.wait_job_end(token, id).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        job
    }

    /// Polls a job until it has finished, succeeded or failed.
    pub async fn wait_job_end(&self, token: &str, id: &Value) -> Value {
        let id = id.as_str().expect("job id");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let res = self.get(&format!("/api/v1/jobs/{id}"), Some(token)).await;
            assert_eq!(res.status, 200, "{}", res.text);
            if matches!(res.body["status"].as_str(), Some("succeeded" | "failed")) {
                return res.body;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "job {id} did not finish: {}",
                res.text
            );
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }

    /// Creates a tenant as the super-admin and returns its JSON.
    pub async fn create_tenant(&self, token: &str, slug: &str, plan: &str) -> Value {
        self.create_tenant_body(
            token,
            json!({"name": format!("Tenant {slug}"), "slug": slug, "plan": plan}),
        )
        .await
    }

    /// A tenant on plan `custom` (no daily quota, 1,000 requests/s) on the
    /// given tier: for tests that write a lot.
    pub async fn create_busy_tenant(&self, token: &str, slug: &str, isolation: &str) -> Value {
        self.create_tenant_body(
            token,
            json!({"name": format!("Tenant {slug}"), "slug": slug, "plan": "custom", "isolation": isolation}),
        )
        .await
    }

    async fn create_tenant_body(&self, token: &str, body: Value) -> Value {
        let res = self.post("/api/v1/tenants", Some(token), body).await;
        assert_eq!(res.status, 201, "{}", res.text);
        res.body
    }
}
