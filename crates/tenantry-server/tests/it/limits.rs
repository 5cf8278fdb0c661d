//! Per-tenant rate limits from the plan: burst, headers, isolation between tenants.

use crate::support::TestApp;
use reqwest::Method;
use serde_json::json;
use std::sync::Arc;
use tenantry::clock::ManualClock;

#[tokio::test]
async fn each_tenant_gets_its_plans_burst_then_429_with_headers() {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let dir = tempfile::tempdir().expect("dir");
    let app = TestApp::spawn_with_clock(dir, clock.clone(), |s| {
        s.rate_limits = true;
    })
    .await;
    let staff = app.admin_token().await;
    let slow = json!({"name": "Slow", "limits": {"max_users": 10, "max_storage_bytes": 1000000,
                      "api_requests_per_day": null, "requests_per_second": 2}});
    app.call(Method::PUT, "/api/v1/plans/slow", Some(&staff), Some(slow))
        .await;
    app.create_tenant(&staff, "noisy", "slow").await;
    app.create_tenant(&staff, "quiet", "slow").await;
    let (_, noisy) = app
        .tenant_user(&staff, "noisy", "a@noisy.example", "admin")
        .await;
    let (_, quiet) = app
        .tenant_user(&staff, "quiet", "a@quiet.example", "admin")
        .await;

    // Burst = 2 s worth = 4 requests.
    for expected_remaining in (0..4).rev() {
        let res = app.get("/api/v1/collections", Some(&noisy)).await;
        assert_eq!(res.status, 200, "{}", res.text);
        assert_eq!(res.headers["ratelimit-limit"], "4");
        assert_eq!(
            res.headers["ratelimit-remaining"],
            expected_remaining.to_string().as_str()
        );
        assert!(res.headers.contains_key("ratelimit-reset"));
    }
    let refused = app.get("/api/v1/collections", Some(&noisy)).await;
    refused.assert_problem(429, "rate_limited");
    assert_eq!(refused.headers["retry-after"], "1");
    assert_eq!(refused.headers["ratelimit-remaining"], "0");
    // The other tenant is unaffected, and staff are not counted.
    let res = app.get("/api/v1/collections", Some(&quiet)).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.headers["ratelimit-remaining"], "3");
    let staff_view = app
        .call_with(
            Method::GET,
            "/api/v1/collections",
            Some(&staff),
            &[("x-tenant-slug", "noisy")],
            None,
        )
        .await;
    assert_eq!(staff_view.status, 200);
    assert_eq!(staff_view.headers["ratelimit-remaining"], "0");
    // Refill: one second brings back two tokens.
    clock.advance(chrono::Duration::seconds(1));
    assert_eq!(
        app.get("/api/v1/collections", Some(&noisy)).await.status,
        200
    );
    assert_eq!(
        app.get("/api/v1/collections", Some(&noisy)).await.status,
        200
    );
    app.get("/api/v1/collections", Some(&noisy))
        .await
        .assert_problem(429, "rate_limited");
    // Routes outside a tenant carry no rate-limit headers.
    assert!(
        !app.get("/healthz", None)
            .await
            .headers
            .contains_key("ratelimit-limit")
    );
}

#[tokio::test]
async fn daily_quota_is_spent_then_renewed_at_utc_midnight_and_survives_restarts() {
    use chrono::TimeZone;
    // 23:59:58 UTC: two seconds before the day turns.
    let start = chrono::Utc
        .with_ymd_and_hms(2026, 11, 25, 23, 59, 58)
        .single()
        .expect("time");
    let clock = Arc::new(ManualClock::new(start));
    let dir = tempfile::tempdir().expect("dir");
    let app = TestApp::spawn_with_clock(dir, clock.clone(), |_| {}).await;
    let staff = app.admin_token().await;
    let daily = json!({"name": "Daily", "limits": {"max_users": 10, "max_storage_bytes": 1000000,
                       "api_requests_per_day": 3, "requests_per_second": 1000}});
    app.call(
        Method::PUT,
        "/api/v1/plans/daily",
        Some(&staff),
        Some(daily),
    )
    .await;
    app.create_tenant(&staff, "counted", "daily").await;
    let (_, user) = app
        .tenant_user(&staff, "counted", "a@counted.example", "admin")
        .await;

    for _ in 0..3 {
        assert_eq!(
            app.get("/api/v1/collections", Some(&user)).await.status,
            200
        );
    }
    app.get("/api/v1/collections", Some(&user))
        .await
        .assert_problem(403, "quota_exceeded");
    // Platform staff are not counted and not refused.
    let staff_call = app
        .call_with(
            Method::GET,
            "/api/v1/collections",
            Some(&staff),
            &[("x-tenant-slug", "counted")],
            None,
        )
        .await;
    assert_eq!(staff_call.status, 200);

    let usage = app
        .get("/api/v1/tenants/counted/usage?range=2d", Some(&staff))
        .await;
    assert_eq!(usage.status, 200, "{}", usage.text);
    assert_eq!(usage.body["requests_today"], 3);
    assert_eq!(
        usage.body["requests_by_day"],
        json!([{"date": "2026-11-24", "requests": 0}, {"date": "2026-11-25", "requests": 3}])
    );
    assert_eq!(usage.body["limits"]["api_requests_per_day"], 3);
    app.get("/api/v1/tenants/counted/usage?range=0d", Some(&staff))
        .await
        .assert_problem(422, "validation_failed");

    // Midnight UTC: a new day, a new quota.
    clock.advance(chrono::Duration::seconds(3));
    assert_eq!(
        app.get("/api/v1/collections", Some(&user)).await.status,
        200
    );
    assert_eq!(
        app.get("/api/v1/collections", Some(&user)).await.status,
        200
    );

    // A restart keeps the counts (flushed in a batch, not per request).
    let dir = app.stop().await;
    let app = TestApp::spawn_with_clock(dir, clock.clone(), |_| {}).await;
    let staff = app.admin_token().await;
    let login = app
        .tenant_login(
            "counted",
            "a@counted.example",
            crate::support::USER_PASSWORD,
        )
        .await;
    let user = login.body["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_eq!(
        app.get("/api/v1/collections", Some(&user)).await.status,
        200,
        "third of the new day"
    );
    app.get("/api/v1/collections", Some(&user))
        .await
        .assert_problem(403, "quota_exceeded");
    let usage = app
        .get("/api/v1/tenants/counted/usage?range=2d", Some(&staff))
        .await;
    assert_eq!(
        usage.body["requests_by_day"],
        json!([{"date": "2026-11-25", "requests": 3}, {"date": "2026-11-26", "requests": 3}])
    );
}

#[tokio::test]
async fn a_tenant_at_its_concurrency_cap_waits_then_gets_429_while_others_proceed() {
    let app = TestApp::spawn_with(tempfile::tempdir().expect("dir"), |s| {
        s.max_concurrent_per_tenant = 1;
        s.tenant_queue_wait_ms = 50;
    })
    .await;
    let staff = app.admin_token().await;
    app.create_tenant(&staff, "busy", "basic").await;
    app.create_tenant(&staff, "calm", "basic").await;
    let (_, busy) = app
        .tenant_user(&staff, "busy", "a@busy.example", "admin")
        .await;
    let (_, calm) = app
        .tenant_user(&staff, "calm", "a@calm.example", "admin")
        .await;
    let services = &app.app_state.services;
    let tenant = services
        .core
        .find_tenant("busy")
        .await
        .expect("lookup")
        .expect("tenant");
    // A slow request of `busy` holds its only slot.
    let held = services
        .admission
        .tenant_gate
        .enter(tenant.id)
        .await
        .expect("slot");
    let res = app.get("/api/v1/collections", Some(&busy)).await;
    res.assert_problem(429, "rate_limited");
    assert_eq!(res.headers["retry-after"], "1");
    assert_eq!(
        app.get("/api/v1/collections", Some(&calm)).await.status,
        200
    );
    drop(held);
    assert_eq!(
        app.get("/api/v1/collections", Some(&busy)).await.status,
        200
    );
}

/// Two instances on one store share one daily quota: each learns the
/// other's counts at its next flush, so together they admit the quota, not
/// twice it (each once counted only its own requests).
#[tokio::test]
async fn two_instances_share_one_daily_quota() {
    let a = TestApp::spawn().await;
    let staff = a.admin_token().await;
    let plan = json!({"name": "Twenty", "limits": {"max_users": 10, "max_storage_bytes": 1000000,
                      "api_requests_per_day": 20, "requests_per_second": 1000}});
    a.call(
        Method::PUT,
        "/api/v1/plans/twenty",
        Some(&staff),
        Some(plan),
    )
    .await;
    a.create_tenant(&staff, "shared-day", "twenty").await;
    let (_, user) = a
        .tenant_user(&staff, "shared-day", "a@shared-day.example", "admin")
        .await;
    let same = a.app_state.settings.clone();
    let b = TestApp::spawn_with(tempfile::tempdir().expect("dir"), move |s| {
        s.data_dir = same.data_dir.clone();
        s.database_url = same.database_url.clone();
    })
    .await;
    // Both instances start counting the day.
    for app in [&a, &b] {
        assert_eq!(
            app.get("/api/v1/collections", Some(&user)).await.status,
            200
        );
    }
    for _ in 0..14 {
        assert_eq!(a.get("/api/v1/collections", Some(&user)).await.status, 200);
    }
    for app in [&a, &b] {
        app.app_state
            .services
            .admission
            .daily_quota
            .flush()
            .await
            .expect("flush");
    }
    // 16 spent between them: B admits the last 4, then refuses.
    let mut admitted = 0;
    for _ in 0..10 {
        if b.get("/api/v1/collections", Some(&user)).await.status == 200 {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 4, "B admitted what A had already spent");
    // And once B's flush has told the store, A knows the day is spent.
    for app in [&b, &a] {
        app.app_state
            .services
            .admission
            .daily_quota
            .flush()
            .await
            .expect("flush");
    }
    a.get("/api/v1/collections", Some(&user))
        .await
        .assert_problem(403, "quota_exceeded");
}
