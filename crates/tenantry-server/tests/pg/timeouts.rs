//! The runtime role's statements are bounded: a write stuck behind a lock
//! held elsewhere answers 503 with Retry-After once `statement_timeout`
//! passes, instead of holding its connection for as long as the lock lasts.

use crate::support::TestApp;
use serde_json::json;
use std::time::{Duration, Instant};

/// A tenant with one record written, its admin's token, and an owner
/// connection inside a transaction holding the lock every write of the
/// tenant takes first (its usage row): writes wait until `release`.
async fn tenant_with_its_writes_locked(app: &TestApp, slug: &str) -> (String, sqlx::PgConnection) {
    let staff = app.admin_token().await;
    let tenant = app.create_tenant(&staff, slug, "basic").await;
    let (_, token) = app
        .tenant_user(&staff, slug, &format!("a@{slug}.example"), "admin")
        .await;
    assert_eq!(write(app, &token).await.status, 201);
    let mut owner = app.pg_owner().await;
    sqlx::query("BEGIN")
        .execute(&mut owner)
        .await
        .expect("begin");
    sqlx::query("SELECT 1 FROM tenant_data.usage WHERE tenant_id = $1::uuid FOR UPDATE")
        .bind(tenant["id"].as_str().expect("id"))
        .execute(&mut owner)
        .await
        .expect("lock");
    (token, owner)
}

async fn release(mut owner: sqlx::PgConnection) {
    sqlx::query("ROLLBACK")
        .execute(&mut owner)
        .await
        .expect("release");
}

async fn write(app: &TestApp, token: &str) -> crate::support::Res {
    app.post(
        "/api/v1/collections/notes/records",
        Some(token),
        json!({"n": 1}),
    )
    .await
}

#[tokio::test]
async fn a_statement_past_the_timeout_is_a_503_and_the_next_one_succeeds() {
    let app = TestApp::spawn_with(tempfile::tempdir().expect("dir"), |s| {
        s.database_statement_timeout_ms = 300;
    })
    .await;
    let (token, owner) = tenant_with_its_writes_locked(&app, "stuck").await;
    let started = Instant::now();
    let res = write(&app, &token).await;
    res.assert_problem(503, "unavailable");
    assert!(res.headers.contains_key("retry-after"));
    assert!(started.elapsed() < Duration::from_secs(5));
    release(owner).await;
    assert_eq!(write(&app, &token).await.status, 201);
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
    // The pool's one connection will wait on the lock held here.
    let (token, owner) = tenant_with_its_writes_locked(&app, "starved").await;
    let (held, starved) = tokio::join!(write(&app, &token), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        app.get("/api/v1/collections/notes/records", Some(&token))
            .await
    });
    starved.assert_problem(503, "unavailable");
    assert!(starved.headers.contains_key("retry-after"));
    held.assert_problem(503, "unavailable");
    release(owner).await;
    let res = app
        .get("/api/v1/collections/notes/records", Some(&token))
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(write(&app, &token).await.status, 201);
}
