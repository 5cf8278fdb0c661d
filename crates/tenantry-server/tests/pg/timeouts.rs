//! The runtime role's statements are bounded: a write stuck behind a lock
//! held elsewhere answers 503 with Retry-After once `statement_timeout`
//! passes, instead of holding its connection for as long as the lock lasts.

use crate::support::TestApp;
use serde_json::json;
use sqlx::Connection;
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_statement_past_the_timeout_is_a_503_and_the_next_one_succeeds() {
    let app = TestApp::spawn_with(tempfile::tempdir().expect("dir"), |s| {
        s.database_statement_timeout_ms = 300;
    })
    .await;
    let staff = app.admin_token().await;
    let tenant = app.create_tenant(&staff, "stuck", "basic").await;
    let (_, token) = app
        .tenant_user(&staff, "stuck", "a@stuck.example", "admin")
        .await;
    let write = || {
        app.post(
            "/api/v1/collections/notes/records",
            Some(&token),
            json!({"n": 1}),
        )
    };
    assert_eq!(write().await.status, 201);
    // Every write of the tenant locks its usage row first: hold it.
    let mut owner = app.pg_owner().await;
    let mut tx = owner.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM tenant_data.usage WHERE tenant_id = $1::uuid FOR UPDATE")
        .bind(tenant["id"].as_str().expect("id"))
        .execute(&mut *tx)
        .await
        .expect("lock");
    let started = Instant::now();
    let res = write().await;
    res.assert_problem(503, "unavailable");
    assert!(res.headers.contains_key("retry-after"));
    assert!(started.elapsed() < Duration::from_secs(5));
    tx.rollback().await.expect("release");
    assert_eq!(write().await.status, 201);
}

/// With every runtime connection taken, a request waits the acquire timeout
/// and answers 503 with Retry-After; once a connection is free again the
/// server serves as before, without a restart.
#[tokio::test]
async fn an_exhausted_pool_answers_503_then_recovers() {
    let app = TestApp::spawn_with(tempfile::tempdir().expect("dir"), |s| {
        s.database_max_connections = 1;
        s.database_acquire_timeout_ms = 300;
        // The write stuck on the lock gives its connection back by then.
        s.database_statement_timeout_ms = 1_500;
    })
    .await;
    let staff = app.admin_token().await;
    let tenant = app.create_tenant(&staff, "starved", "basic").await;
    let (_, token) = app
        .tenant_user(&staff, "starved", "a@starved.example", "admin")
        .await;
    let write = || {
        app.post(
            "/api/v1/collections/notes/records",
            Some(&token),
            json!({"n": 1}),
        )
    };
    assert_eq!(write().await.status, 201);
    // The pool's one connection waits on a lock held here.
    let mut owner = app.pg_owner().await;
    let mut tx = owner.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM tenant_data.usage WHERE tenant_id = $1::uuid FOR UPDATE")
        .bind(tenant["id"].as_str().expect("id"))
        .execute(&mut *tx)
        .await
        .expect("lock");
    let (held, starved) = tokio::join!(write(), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        app.get("/api/v1/collections/notes/records", Some(&token))
            .await
    });
    starved.assert_problem(503, "unavailable");
    assert!(starved.headers.contains_key("retry-after"));
    held.assert_problem(503, "unavailable");
    tx.rollback().await.expect("release");
    let res = app
        .get("/api/v1/collections/notes/records", Some(&token))
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(write().await.status, 201);
}
