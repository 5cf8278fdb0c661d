//! Rate limits shared through Redis: instances draw from one bucket per
//! tenant; an unreachable Redis falls back to per-instance buckets.
//!
//! Redis: `TENANTRY_TEST_REDIS_URL`, default 127.0.0.1:6379. Without one the
//! tests that need it are skipped with a message, except under `CI=true`,
//! where a missing Redis fails the run.

use crate::support::TestApp;
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};
use tenantry_server::App;

async fn redis_url() -> Option<String> {
    let url = std::env::var("TENANTRY_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let ping = async {
        let client = redis::Client::open(url.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    match tokio::time::timeout(Duration::from_secs(3), ping).await {
        Ok(Ok(_)) => Some(url),
        outcome => {
            let why = match outcome {
                Ok(Err(e)) => e.to_string(),
                _ => "timed out".to_owned(),
            };
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true and Redis at {url} is unreachable: {why}");
            }
            eprintln!("skipping: Redis at {url} is unreachable ({why})");
            None
        }
    }
}

/// A plan of 5 requests per second (a burst of 10) and one tenant on it,
/// with an admin user; returns the tenant's id and the user's token.
async fn tenant_on_five_per_second(app: &TestApp, slug: &str) -> (String, String) {
    let staff = app.admin_token().await;
    let plan = json!({"name": "Five", "limits": {"max_users": 10, "max_storage_bytes": 1000000,
                      "api_requests_per_day": null, "requests_per_second": 5}});
    let res = app
        .call(Method::PUT, "/api/v1/plans/five", Some(&staff), Some(plan))
        .await;
    assert!(res.status.is_success(), "{}", res.text);
    let tenant = app.create_tenant(&staff, slug, "five").await;
    let (_, token) = app
        .tenant_user(&staff, slug, &format!("a@{slug}.example"), "admin")
        .await;
    (tenant["id"].as_str().expect("id").to_owned(), token)
}

#[tokio::test]
async fn two_instances_share_one_bucket_per_tenant() {
    let Some(url) = redis_url().await else {
        return;
    };
    let one = TestApp::spawn_with(tempfile::tempdir().expect("dir"), |s| {
        s.rate_limits = true;
        s.redis_url = Some(url.clone().into());
    })
    .await;
    // The second instance: same data, same keys, same Redis.
    let built = App::build((*one.app_state.settings).clone())
        .await
        .expect("second instance builds");
    let router = built.router();
    let two = TestApp::serve(tempfile::tempdir().expect("dir"), built, router).await;
    let (tenant, token) = tenant_on_five_per_second(&one, "shared-rl").await;

    let started = Instant::now();
    let mut allowed = 0;
    for i in 0..30 {
        let app = if i % 2 == 0 { &one } else { &two };
        let res = app.get("/api/v1/collections", Some(&token)).await;
        assert_eq!(res.headers["ratelimit-limit"], "10", "{}", res.text);
        match res.status.as_u16() {
            200 => allowed += 1,
            429 => assert!(res.headers.contains_key("retry-after")),
            other => panic!("unexpected {other}: {}", res.text),
        }
    }
    // Each instance alone would allow its own burst of 10 (20 together);
    // one shared bucket allows 10, plus what refilled meanwhile.
    let refilled = (started.elapsed().as_secs_f64() * 5.0).ceil() as i32;
    assert!(
        refilled < 10,
        "the requests took too long ({:?}) to tell the buckets apart",
        started.elapsed()
    );
    assert!(
        (10..=10 + refilled).contains(&allowed),
        "{allowed} of 30 allowed, {refilled} refilled"
    );

    // The bucket is one Redis key that vanishes once idle.
    let client = redis::Client::open(url.as_str()).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("tenantry:rl:{tenant}"))
        .query_async(&mut conn)
        .await
        .expect("pttl");
    assert!((1..=3000).contains(&ttl), "ttl {ttl} ms");
}

#[tokio::test]
async fn an_unreachable_redis_falls_back_to_the_instances_own_bucket() {
    let app = TestApp::spawn_with(tempfile::tempdir().expect("dir"), |s| {
        s.rate_limits = true;
        // Nothing listens on port 1.
        s.redis_url = Some("redis://127.0.0.1:1".into());
    })
    .await;
    let (_, token) = tenant_on_five_per_second(&app, "no-redis").await;
    for expected_remaining in (0..10).rev() {
        let res = app.get("/api/v1/collections", Some(&token)).await;
        assert_eq!(res.status, 200, "{}", res.text);
        assert_eq!(
            res.headers["ratelimit-remaining"],
            expected_remaining.to_string().as_str()
        );
    }
    let refused = app.get("/api/v1/collections", Some(&token)).await;
    refused.assert_problem(429, "rate_limited");
}

#[tokio::test]
async fn the_redis_bucket_answers_like_the_in_process_one() {
    use tenantry_server::enforce::shared_bucket::SharedBuckets;
    let Some(url) = redis_url().await else {
        return;
    };
    let buckets = SharedBuckets::new(&url).expect("buckets");
    let tenant = tenantry::TenantId::new();
    // Looking first takes nothing.
    let seen = buckets.check(tenant, 10, false).await.expect("check");
    assert_eq!(
        (seen.limit, seen.remaining, seen.retry_after),
        (20, 20, None)
    );
    for i in 0..20 {
        let info = buckets.check(tenant, 10, true).await.expect("check");
        assert_eq!(info.retry_after, None, "request {i} of the burst");
        assert_eq!(info.limit, 20);
        assert_eq!(info.remaining, 19 - i);
    }
    let refused = buckets.check(tenant, 10, true).await.expect("check");
    assert_eq!(refused.retry_after, Some(1));
    assert_eq!((refused.remaining, refused.reset_secs), (0, 2));
    // Other tenants have their own buckets.
    let other = buckets
        .check(tenantry::TenantId::new(), 10, true)
        .await
        .expect("check");
    assert_eq!((other.remaining, other.retry_after), (19, None));
}

/// Login attempts are counted in Redis: guesses sent at once to two
/// instances get the account's limit between them, not the limit each.
#[tokio::test]
async fn two_instances_share_one_login_lockout() {
    let Some(url) = redis_url().await else {
        return;
    };
    let one = TestApp::spawn_with(tempfile::tempdir().expect("dir"), |s| {
        s.redis_url = Some(url.clone().into());
    })
    .await;
    let built = App::build((*one.app_state.settings).clone())
        .await
        .expect("second instance builds");
    let router = built.router();
    let two = TestApp::serve(tempfile::tempdir().expect("dir"), built, router).await;
    let staff = one.admin_token().await;
    // A new tenant each run: its id keys the counters, so runs never meet.
    one.create_tenant(&staff, "locked-both", "basic").await;
    one.tenant_user(&staff, "locked-both", "v@locked-both.example", "user")
        .await;
    let guesses = (0..40).map(|i| {
        let app = if i % 2 == 0 { &one } else { &two };
        app.tenant_login("locked-both", "v@locked-both.example", "wrong-Passw0rd!")
    });
    let statuses: Vec<u16> = futures::future::join_all(guesses)
        .await
        .iter()
        .map(|r| r.status.as_u16())
        .collect();
    let checked = statuses.iter().filter(|s| **s == 401).count();
    assert_eq!(checked, 5, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 35);
}
