//! PostgreSQL going away under load: requests fail fast with 503 and
//! `Retry-After` (no hang, no crash), and the server recovers by itself.

use crate::pg::{Cluster, free_port};
use crate::support::TestApp;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_fail_fast_while_postgres_restarts_and_recover_after() {
    let cluster = Cluster::start(free_port()).await;
    let url = format!("{}/tenantry", cluster.url());
    let app = TestApp::spawn_with(tempfile::tempdir().expect("dir"), |s| {
        s.database_url = Some(url.into());
        s.database_acquire_timeout_ms = 1000;
    })
    .await;
    let staff = app.admin_token().await;
    let mut records = Vec::new();
    for (slug, tier) in [("up-shared", "shared"), ("up-dedicated", "dedicated")] {
        let t = app
            .post(
                "/api/v1/tenants",
                Some(&staff),
                json!({"name": slug, "slug": slug, "plan": "enterprise", "isolation": tier}),
            )
            .await;
        assert_eq!(t.status, 201, "{}", t.text);
        let (_, token) = app
            .tenant_user(&staff, slug, &format!("a@{slug}.example"), "admin")
            .await;
        let r = app
            .post(
                "/api/v1/collections/notes/records",
                Some(&token),
                json!({"tier": tier}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let path = format!(
            "/api/v1/collections/notes/records/{}",
            r.body["id"].as_str().expect("id")
        );
        records.push((token, path));
    }

    cluster.stop_server();
    let app = std::sync::Arc::new(app);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let app = app.clone();
        let (token, path) = records[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let res = app.get(&path, Some(&token)).await;
            (started.elapsed(), res)
        }));
    }
    for task in tasks {
        let (took, res) = task.await.expect("request task");
        res.assert_problem(503, "unavailable");
        assert!(
            res.headers.get("retry-after").is_some(),
            "{:?}",
            res.headers
        );
        assert!(
            !res.text.contains("connection") && !res.text.contains("sqlx"),
            "5xx bodies carry no internals: {}",
            res.text
        );
        assert!(took < Duration::from_secs(5), "took {took:?}: hung");
    }
    let health = app.get("/readyz", None).await;
    assert_eq!(health.status, 503, "{}", health.text);

    cluster.start_server();
    let deadline = Instant::now() + Duration::from_secs(30);
    for (token, path) in &records {
        loop {
            let res = app.get(path, Some(token)).await;
            if res.status == 200 {
                assert!(res.body["data"]["tier"].is_string(), "{}", res.text);
                break;
            }
            assert!(Instant::now() < deadline, "no recovery: {}", res.text);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert_eq!(app.get("/readyz", None).await.status, 200);
}
