//! The dedicated tier's pool registry keeps the server's connections to
//! tenant databases under the configured cap, however many tenants are busy.

use crate::support::TestApp;
use serde_json::json;

const CAP: u32 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedicated_pools_stay_under_the_connection_cap() {
    let app = TestApp::spawn_with(tempfile::tempdir().expect("dir"), |s| {
        s.dedicated_max_connections = CAP;
    })
    .await;
    let staff = app.admin_token().await;
    let mut tenants = Vec::new();
    for i in 0..12 {
        let slug = format!("ded-{i}");
        let t = app
            .post(
                "/api/v1/tenants",
                Some(&staff),
                json!({"name": slug, "slug": slug, "plan": "enterprise", "isolation": "dedicated"}),
            )
            .await;
        assert_eq!(t.status, 201, "{}", t.text);
        let (_, token) = app
            .tenant_user(&staff, &slug, &format!("a@{slug}.example"), "admin")
            .await;
        tenants.push((slug, token));
    }
    let main: String = {
        let mut owner = app.pg_owner().await;
        sqlx::query_scalar("SELECT current_database()::text")
            .fetch_one(&mut owner)
            .await
            .expect("db")
    };
    let app = std::sync::Arc::new(app);
    let mut peak = 0;
    for round in 0..3 {
        let mut tasks = Vec::new();
        for (slug, token) in tenants.clone() {
            let app = app.clone();
            tasks.push(tokio::spawn(async move {
                let r = app
                    .post(
                        "/api/v1/collections/notes/records",
                        Some(&token),
                        json!({"round": round, "slug": slug}),
                    )
                    .await;
                assert_eq!(r.status, 201, "{}", r.text);
                let listed = app
                    .get("/api/v1/collections/notes/records", Some(&token))
                    .await;
                assert_eq!(listed.status, 200, "{}", listed.text);
                assert!(
                    listed.body["items"]
                        .as_array()
                        .expect("items")
                        .iter()
                        .all(|r| r["data"]["slug"] == slug.as_str()),
                    "{}",
                    listed.text
                );
            }));
        }
        let mut owner = app.pg_owner().await;
        for t in tasks {
            let open: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE usename = 'tenantry_app' AND datname LIKE $1 || '\\_%'",
            )
            .bind(&main)
            .fetch_one(&mut owner)
            .await
            .expect("pg_stat_activity");
            peak = peak.max(open);
            t.await.expect("tenant task");
        }
    }
    assert!(peak > 0, "the dedicated databases were used");
    // The registry holds at most CAP; a connection it has just closed (an
    // evicted pool's) can still show while its backend exits, beside the
    // one that replaced it. Unbounded, the 12 tenants would hold 12.
    let lingering = 2;
    assert!(
        peak <= i64::from(CAP) + lingering,
        "{peak} connections to dedicated databases, cap {CAP}"
    );
}

/// Creating many dedicated tenants at once takes a bounded number of owner
/// connections for the database changes: unbounded, they took the server
/// past its `max_connections` beside the pools.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_provisioning_bounds_its_owner_connections() {
    let app = std::sync::Arc::new(TestApp::spawn().await);
    let staff = app.admin_token().await;
    let creations: Vec<_> = (0..24)
        .map(|i| {
            let (app, staff) = (app.clone(), staff.clone());
            tokio::spawn(async move {
                let slug = format!("burst-{i}");
                let body = json!({"name": slug, "slug": slug, "plan": "enterprise", "isolation": "dedicated"});
                let t = app.post("/api/v1/tenants", Some(&staff), body).await;
                assert_eq!(t.status, 201, "{}", t.text);
            })
        })
        .collect();
    let mut owner = app.pg_owner().await;
    let mut peak = 0;
    while creations.iter().any(|c| !c.is_finished()) {
        let changing: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = 'postgres' AND application_name = 'tenantry-admin'",
        )
        .fetch_one(&mut owner)
        .await
        .expect("pg_stat_activity");
        peak = peak.max(changing);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    for c in creations {
        c.await.expect("creation");
    }
    // A closed connection's backend shows a moment longer while it exits:
    // allow one such per turn (unbounded, the burst showed up to 24).
    let bound = 2 * tenantry::store::postgres::MAX_DATABASE_CHANGES as i64;
    assert!(peak > 0, "the creations were seen");
    assert!(
        peak <= bound,
        "{peak} owner connections at once, bound {bound}"
    );
}
