//! The `tenantry` binary itself: serve, logs, signals, and the CLI.

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn tenantry(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenantry"));
    cmd.current_dir(dir)
        .env_remove("TENANTRY_DATABASE_URL")
        .env("TENANTRY_DATA_DIR", dir.join("data"))
        .env("TENANTRY_ADMIN_EMAIL", crate::support::ADMIN_EMAIL)
        .env("TENANTRY_ADMIN_PASSWORD", crate::support::ADMIN_PASSWORD);
    cmd
}

/// Runs one CLI command to completion: (succeeded, stdout, stderr).
fn run_cli(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = tenantry(dir).args(args).output().expect("run");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// `tenantry serve` on a free port with its stdout captured, once ready:
/// the child and its base URL.
async fn serve(mut cmd: Command) -> (Child, String) {
    let port = free_port();
    let child = cmd
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.get(format!("{base}/readyz")).send().await {
            Ok(r) if r.status() == 200 => return (child, base),
            _ if Instant::now() > deadline => panic!("server never became ready"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Stops the server with SIGTERM and returns its log lines as JSON.
fn stop(mut child: Child) -> (std::process::ExitStatus, Vec<Value>) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = child.wait().expect("wait");
    let lines = BufReader::new(child.stdout.take().expect("stdout"))
        .lines()
        .map_while(Result::ok)
        .map(|l| {
            serde_json::from_str(&l).unwrap_or_else(|e| panic!("non-JSON log line {l:?}: {e}"))
        })
        .collect();
    (exit, lines)
}

#[tokio::test]
async fn serve_logs_json_per_request_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("dir");
    let (child, base) = serve(tenantry(dir.path())).await;
    let client = reqwest::Client::new();
    let res = client
        .get(format!("{base}/api/v1/plans"))
        .header("x-request-id", "log-probe-1")
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 401);

    let (exit, lines) = stop(child);
    assert!(exit.success(), "exit status {exit:?}");
    let access = lines
        .iter()
        .find(|l| l["request_id"] == "log-probe-1")
        .expect("an access line for the probe");
    assert_eq!(access["method"], "GET");
    assert_eq!(access["path"], "/api/v1/plans");
    assert_eq!(access["status"], 401);
    assert!(access["latency_ms"].is_number());
    assert!(lines.iter().any(|l| l["message"] == "stopped cleanly"));
}

#[test]
fn cli_manages_tenants_and_plans_through_the_services() {
    let dir = tempfile::tempdir().expect("dir");
    let run = |args: &[&str]| run_cli(dir.path(), args);
    let (ok, out, err) = run(&[
        "tenant", "create", "--name", "Acme", "--slug", "acme", "--plan", "premium",
    ]);
    assert!(ok, "{err}");
    let tenant: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(tenant["slug"], "acme");
    assert_eq!(tenant["plan"], "premium");

    let (ok, _, err) = run(&["tenant", "create", "--name", "Bad", "--slug", "Bad Slug"]);
    assert!(!ok);
    assert!(err.contains("slug"), "{err}");
    let (ok, _, err) = run(&["tenant", "create", "--name", "Dup", "--slug", "acme"]);
    assert!(!ok);
    assert!(err.contains("already exists"), "{err}");

    let (ok, out, _) = run(&["tenant", "suspend", "acme"]);
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<Value>(&out).expect("json")["status"],
        "suspended"
    );
    let (_, out, _) = run(&["tenant", "list", "--status", "suspended"]);
    assert!(out.contains("acme"), "{out}");
    let (ok, out, _) = run(&["tenant", "activate", "acme"]);
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<Value>(&out).expect("json")["status"],
        "active"
    );
    let (ok, out, _) = run(&["tenant", "show", tenant["id"].as_str().expect("id")]);
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<Value>(&out).expect("json")["slug"],
        "acme"
    );

    let (ok, out, _) = run(&["plan", "list"]);
    assert!(ok);
    for code in ["basic", "premium", "enterprise", "custom"] {
        assert!(out.contains(code), "{out}");
    }
    assert!(
        out.contains("unlimited"),
        "custom has unlimited requests/day: {out}"
    );

    let (ok, out, err) = run(&[
        "admin",
        "create",
        "--email",
        "ops@example.com",
        "--password",
        "Another-Secret-1",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("ops@example.com"));
    let (ok, _, err) = run(&[
        "admin",
        "create",
        "--email",
        "ops@example.com",
        "--password",
        "Another-Secret-1",
    ]);
    assert!(!ok, "duplicate admin email must fail");
    assert!(err.contains("already exists"), "{err}");

    let (ok, out, _) = run(&["tenant", "delete", "acme"]);
    assert!(ok, "{out}");
    let (ok, _, err) = run(&["tenant", "show", "acme"]);
    assert!(!ok);
    assert!(err.contains("not found"), "{err}");
}

/// Export, import, move and the job list from the command line: each
/// command runs its job to the end and says how far it got on stderr; a
/// failed job fails the command with the job's error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_exports_imports_moves_and_lists_jobs() {
    let dir = tempfile::tempdir().expect("dir");
    let run = |args: &[&str]| run_cli(dir.path(), args);
    for (slug, name) in [("acme", "Acme Ltd"), ("copy", "Placeholder")] {
        let (ok, _, err) = run(&[
            "tenant", "create", "--name", name, "--slug", slug, "--plan", "premium",
        ]);
        assert!(ok, "{err}");
    }
    // Something to carry: a user and a record, written through the server.
    let (child, base) = serve(tenantry(dir.path())).await;
    let http = crate::support::Http::new(base);
    let login = http
        .login(crate::support::ADMIN_EMAIL, crate::support::ADMIN_PASSWORD)
        .await;
    let staff = login.body["access_token"].as_str().expect("token");
    let (_, token) = http
        .tenant_user(staff, "acme", "a@acme.example", "admin")
        .await;
    let record = http
        .post(
            "/api/v1/collections/notes/records",
            Some(&token),
            serde_json::json!({"text": "carried"}),
        )
        .await;
    assert_eq!(record.status, 201, "{}", record.text);
    stop(child);

    let file = dir.path().join("acme.ndjson");
    let file_arg = file.to_str().expect("utf-8 path");
    let (ok, out, err) = run(&["tenant", "export", "acme", "--output", file_arg]);
    assert!(ok, "{err}");
    assert!(out.contains("exported acme"), "{out}");
    assert!(err.contains("export: 100%"), "progress lines: {err}");
    let header: Value = serde_json::from_str(
        std::fs::read_to_string(&file)
            .expect("the file")
            .lines()
            .next()
            .expect("a header"),
    )
    .expect("json header");
    assert_eq!(header["format"], "tenantry-export");
    assert_eq!(header["slug"], "acme");

    let (ok, out, err) = run(&["tenant", "import", "copy", "--file", file_arg]);
    assert!(ok, "{err}");
    assert!(out.contains("imported into copy"), "{out}");
    let (_, out, _) = run(&["tenant", "show", "copy"]);
    let copy: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(copy["name"], "Acme Ltd", "the name comes with the file");

    // Not empty any more: a second import fails, naming why.
    let (ok, _, err) = run(&["tenant", "import", "copy", "--file", file_arg]);
    assert!(!ok);
    assert!(err.contains("not empty"), "{err}");
    let bad = dir.path().join("bad.ndjson");
    std::fs::write(&bad, "{\"format\":\"tenantry-export\",\"version\":9}\n").expect("write");
    let (ok, _, err) = run(&[
        "tenant",
        "import",
        "acme",
        "--file",
        bad.to_str().expect("utf-8"),
    ]);
    assert!(!ok);
    assert!(err.contains("line 1"), "{err}");

    let (ok, out, err) = run(&["tenant", "move", "copy", "--isolation", "dedicated"]);
    assert!(ok, "{err}");
    assert!(out.contains("moved copy to dedicated"), "{out}");
    let (_, out, _) = run(&["tenant", "show", "copy"]);
    assert_eq!(
        serde_json::from_str::<Value>(&out).expect("json")["isolation"],
        "dedicated"
    );
    let (ok, _, err) = run(&["tenant", "move", "copy", "--isolation", "sideways"]);
    assert!(!ok);
    assert!(err.contains("--isolation"), "{err}");

    let id = copy["id"].as_str().expect("id");
    let (ok, out, err) = run(&["tenant", "jobs", "--tenant", "copy"]);
    assert!(ok, "{err}");
    let rows: Vec<&str> = out.lines().skip(1).collect();
    // Newest first: the move, the failed import, the import.
    let kinds: Vec<(&str, &str)> = rows
        .iter()
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(cols[1], id, "{l}");
            (cols[2], cols[3])
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("move", "succeeded"),
            ("import", "failed"),
            ("import", "succeeded")
        ],
        "{out}"
    );
    let (_, out, _) = run(&["tenant", "jobs", "--status", "failed"]);
    assert_eq!(out.lines().count(), 3, "two failed imports: {out}");

    // The record arrived, and is read where the tenant now lives.
    let (child, base) = serve(tenantry(dir.path())).await;
    let http = crate::support::Http::new(base);
    let login = http
        .tenant_login("copy", "a@acme.example", crate::support::USER_PASSWORD)
        .await;
    let token = login.body["access_token"].as_str().expect("token");
    let listed = http
        .get("/api/v1/collections/notes/records", Some(token))
        .await;
    assert_eq!(
        listed.body["items"][0]["data"]["text"], "carried",
        "{}",
        listed.text
    );
    stop(child);
}

/// `tenantry migrate` from the command line: dedicated tenants behind the
/// binary's schema stop every command that opens the stores; `migrate`
/// brings them up and says so.
#[test]
fn migrate_command_brings_tenants_that_are_behind_up_to_date() {
    let dir = tempfile::tempdir().expect("dir");
    for slug in ["cli-m1", "cli-m2"] {
        let out = tenantry(dir.path())
            .args(["tenant", "create", "--name", slug, "--slug", slug])
            .args(["--plan", "enterprise", "--isolation", "dedicated"])
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // As if an older binary had created their databases.
    let control = dir.path().join("data").join("control.db");
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            use sqlx::Connection;
            let mut conn =
                sqlx::SqliteConnection::connect(&format!("sqlite://{}", control.display()))
                    .await
                    .expect("control.db");
            sqlx::query("UPDATE tenants SET schema_version = 0 WHERE slug LIKE 'cli-m%'")
                .execute(&mut conn)
                .await
                .expect("update");
        });
    let list = |dir: &std::path::Path| {
        tenantry(dir)
            .args(["tenant", "list"])
            .output()
            .expect("run")
    };
    let refused = list(dir.path());
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("2 dedicated tenant database(s) are behind"),
        "{stderr}"
    );
    assert!(stderr.contains("tenantry migrate"), "{stderr}");

    let migrated = tenantry(dir.path()).arg("migrate").output().expect("run");
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    assert!(String::from_utf8_lossy(&migrated.stdout).contains("schema up to date"));
    let listed = list(dir.path());
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(String::from_utf8_lossy(&listed.stdout).contains("cli-m2"));
}

/// `tenantry audit verify`: intact chains pass; a row edited in the database
/// fails the command, which names the first broken entry.
#[test]
fn audit_verify_command_reports_the_first_broken_link() {
    let dir = tempfile::tempdir().expect("dir");
    let run = |args: &[&str]| run_cli(dir.path(), args);
    for slug in ["av-one", "av-two"] {
        let (ok, _, err) = run(&["tenant", "create", "--name", slug, "--slug", slug]);
        assert!(ok, "{err}");
        let (ok, _, err) = run(&["tenant", "suspend", slug]);
        assert!(ok, "{err}");
    }
    let (ok, out, err) = run(&["audit", "verify"]);
    assert!(ok, "{err}");
    assert!(out.contains("audit log intact"), "{out}");

    // Rewrite av-two's suspension in control.db.
    let control = dir.path().join("data").join("control.db");
    let forged: String = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            use sqlx::Connection;
            let mut conn =
                sqlx::SqliteConnection::connect(&format!("sqlite://{}", control.display()))
                    .await
                    .expect("control.db");
            let id: String = sqlx::query_scalar(
                "SELECT a.id FROM audit_log a JOIN tenants t ON t.id = a.tenant_id
                 WHERE t.slug = 'av-two' AND a.action = 'tenant.suspend'",
            )
            .fetch_one(&mut conn)
            .await
            .expect("entry");
            sqlx::query("DROP TRIGGER audit_log_append_only_update")
                .execute(&mut conn)
                .await
                .expect("drop trigger");
            sqlx::query("UPDATE audit_log SET actor = 'someone-else' WHERE id = ?")
                .bind(&id)
                .execute(&mut conn)
                .await
                .expect("forge");
            id
        });
    let (ok, out, err) = run(&["audit", "verify"]);
    assert!(!ok, "a broken chain fails the command: {out}");
    assert!(out.contains("tenant av-two"), "{out}");
    assert!(out.contains(&forged), "{out}");
    assert!(
        !out.contains("av-one"),
        "intact tenants are not listed: {out}"
    );
    assert!(err.contains("1 broken audit chain"), "{err}");
    let (ok, out, _) = run(&["audit", "verify", "--tenant", "av-one"]);
    assert!(ok, "{out}");
    assert!(out.contains("intact"), "{out}");
    let (ok, out, _) = run(&["audit", "verify", "--tenant", "av-two"]);
    assert!(!ok);
    assert!(out.contains(&format!("BROKEN at entry {forged}")), "{out}");
}

/// Every log line written while a request is served carries the request's
/// id and, once resolved, its tenant's (span fields), not only the access line.
#[tokio::test]
async fn log_lines_inside_a_tenant_request_carry_its_tenant_and_request_ids() {
    let dir = tempfile::tempdir().expect("dir");
    let created = tenantry(dir.path())
        .args(["tenant", "create", "--name", "Logs", "--slug", "logs"])
        .output()
        .expect("run");
    assert!(created.status.success());
    let tenant: Value = serde_json::from_slice(&created.stdout).expect("json");
    let mut cmd = tenantry(dir.path());
    cmd.env("TENANTRY_LOG", "info,tenantry_server=debug");
    let (child, base) = serve(cmd).await;
    let client = reqwest::Client::new();
    let login: Value = client
        .post(format!("{base}/api/v1/auth/login"))
        .json(&serde_json::json!({"email": crate::support::ADMIN_EMAIL,
                                  "password": crate::support::ADMIN_PASSWORD}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    let res = client
        .get(format!("{base}/api/v1/collections"))
        .bearer_auth(login["access_token"].as_str().expect("token"))
        .header("x-tenant-slug", "logs")
        .header("x-request-id", "log-probe-2")
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    let (_, lines) = stop(child);
    let inner = lines
        .iter()
        .find(|l| l["message"] == "tenant resolved")
        .expect("a log line from inside the request");
    assert_eq!(inner["span"]["request_id"], "log-probe-2", "{inner}");
    assert_eq!(inner["span"]["tenant_id"], tenant["id"], "{inner}");
}
