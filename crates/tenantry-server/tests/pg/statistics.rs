//! A bulk load refreshes the planner's statistics: without them a new
//! tenant database (or a table autovacuum has not reached yet) planned each
//! page of an import or a move as a scan of the tenant's whole collection.

use crate::support::TestApp;
use futures::StreamExt;
use serde_json::json;

#[tokio::test]
async fn a_move_into_a_new_database_leaves_it_analyzed() {
    let app = TestApp::spawn().await;
    let staff = app.admin_token().await;
    // No daily quota in the way of the writes; shared to begin with.
    let tenant = app.create_busy_tenant(&staff, "analyzed", "shared").await;
    let (_, token) = app
        .tenant_user(&staff, "analyzed", "a@analyzed.example", "admin")
        .await;
    let statuses = futures::stream::iter((0..1100).map(|n| {
        app.post(
            "/api/v1/collections/notes/records",
            Some(&token),
            json!({"n": n}),
        )
    }))
    .buffer_unordered(16)
    .collect::<Vec<_>>()
    .await;
    assert!(statuses.iter().all(|r| r.status == 201));
    let moved = app
        .post(
            "/api/v1/tenants/analyzed/move",
            Some(&staff),
            json!({"isolation": "dedicated"}),
        )
        .await;
    assert_eq!(moved.status, 202, "{}", moved.text);
    app.wait_job(&staff, &moved.body["job_id"]).await;

    let id = tenant["id"].as_str().expect("id").replace('-', "");
    let mut owner = app.pg_owner().await;
    let name: String =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE '%\\_' || $1")
            .bind(&id)
            .fetch_one(&mut owner)
            .await
            .expect("the tenant's database");
    let url = tenantry_server::settings::exposed(&app.app_state.settings.database_url)
        .expect("url")
        .to_owned();
    let base = url.rsplit_once('/').expect("a database in the url").0;
    use sqlx::Connection;
    let mut own = sqlx::PgConnection::connect(&format!("{base}/{name}"))
        .await
        .expect("connect");
    let analyzed: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
        "SELECT last_analyze FROM pg_stat_user_tables WHERE schemaname = 'tenant_data' AND relname = 'records'",
    )
    .fetch_one(&mut own)
    .await
    .expect("stats");
    assert!(analyzed.is_some(), "the copy's records table was analyzed");
}
