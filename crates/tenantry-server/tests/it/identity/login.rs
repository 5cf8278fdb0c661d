//! Logging in: lockout after repeated failures, one-time codes by webhook,
//! self-registration.

use super::world;
use crate::support::{TestApp, USER_PASSWORD};
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::Arc;
use tenantry::clock::ManualClock;

#[tokio::test]
async fn repeated_failures_lock_the_account_until_the_window_passes() {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let dir = tempfile::tempdir().expect("dir");
    let app = TestApp::spawn_with_clock(dir, clock.clone(), |_| {}).await;
    let staff = app.admin_token().await;
    app.create_tenant(&staff, "acme", "basic").await;
    app.tenant_user(&staff, "acme", "a@acme.example", "user")
        .await;

    // Four failures, then a success resets the count.
    for _ in 0..4 {
        app.tenant_login("acme", "a@acme.example", "wrong")
            .await
            .assert_problem(401, "unauthorized");
    }
    assert_eq!(
        app.tenant_login("acme", "a@acme.example", USER_PASSWORD)
            .await
            .status,
        200
    );
    for _ in 0..5 {
        app.tenant_login("acme", "a@acme.example", "wrong")
            .await
            .assert_problem(401, "unauthorized");
    }
    // Locked: even the right password gets 429 with Retry-After.
    let locked = app
        .tenant_login("acme", "a@acme.example", USER_PASSWORD)
        .await;
    locked.assert_problem(429, "rate_limited");
    let retry: u64 = locked.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("secs");
    assert!((1..=900).contains(&retry), "{retry}");
    // Unknown accounts lock the same way (nothing reveals whether they exist).
    for _ in 0..5 {
        app.tenant_login("acme", "nobody@acme.example", "x").await;
    }
    app.tenant_login("acme", "nobody@acme.example", "x")
        .await
        .assert_problem(429, "rate_limited");
    // The window passes.
    clock.advance(chrono::Duration::minutes(16));
    assert_eq!(
        app.tenant_login("acme", "a@acme.example", USER_PASSWORD)
            .await
            .status,
        200
    );
}

/// Starts a one-shot HTTP receiver that records POSTed JSON bodies.
async fn webhook_receiver() -> (String, Arc<tokio::sync::Mutex<Vec<Value>>>) {
    let seen = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    let router = axum::Router::new().route(
        "/otp",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let sink = sink.clone();
            async move {
                sink.lock().await.push(body);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/otp", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, seen)
}

#[tokio::test]
async fn otp_login_via_webhook_with_expiry_and_attempt_limit() {
    let (url, seen) = webhook_receiver().await;
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let dir = tempfile::tempdir().expect("dir");
    let app = TestApp::spawn_with_clock(dir, clock.clone(), |s| {
        s.otp_sender = "webhook".into();
        s.otp_webhook_url = Some(url.into());
    })
    .await;
    let staff = app.admin_token().await;
    app.create_tenant(&staff, "acme", "basic").await;
    let phone = "+919800000001";
    app.call_with(Method::POST, "/api/v1/users", Some(&staff), &[("x-tenant-slug", "acme")],
        Some(json!({"email": "p@acme.example", "password": USER_PASSWORD, "name": "P", "phone": phone})))
        .await;

    let request = || {
        app.post(
            "/api/v1/auth/otp/request",
            None,
            json!({"tenant": "acme", "phone": phone}),
        )
    };
    let verify = |code: String| {
        app.post(
            "/api/v1/auth/otp/verify",
            None,
            json!({"tenant": "acme", "phone": phone, "code": code}),
        )
    };
    request().await.assert_problem(403, "forbidden");
    app.call(
        Method::PUT,
        "/api/v1/tenants/acme/config/auth.otp",
        Some(&staff),
        Some(json!({"value": true})),
    )
    .await;

    let last_code = || async {
        seen.lock()
            .await
            .last()
            .and_then(|b| b["code"].as_str())
            .map(str::to_owned)
            .expect("a code")
    };
    assert_eq!(request().await.status, 202);
    let sent = seen.lock().await.last().cloned().expect("webhook called");
    assert_eq!(sent["tenant"], "acme");
    assert_eq!(sent["phone"], phone);
    let code = last_code().await;
    // The code is stored hashed, never in clear.
    let services = &app.app_state.services;
    let tenant = services
        .core
        .find_tenant("acme")
        .await
        .expect("lookup")
        .expect("tenant");
    let stored = services
        .core
        .store
        .otp(&tenant, phone)
        .await
        .expect("otp")
        .expect("stored");
    assert_eq!(stored.code_hash.len(), 64);
    assert!(!stored.code_hash.contains(&code));

    // Correct code logs in, once.
    let ok = verify(code.clone()).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(ok.body["user"]["phone"], phone);
    verify(code).await.assert_problem(401, "unauthorized");

    // Expiry after five minutes.
    request().await;
    let code = last_code().await;
    clock.advance(chrono::Duration::seconds(301));
    verify(code).await.assert_problem(401, "unauthorized");

    // Five wrong codes void the right one.
    request().await;
    let code = last_code().await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for _ in 0..5 {
        verify(wrong.into())
            .await
            .assert_problem(401, "unauthorized");
    }
    verify(code).await.assert_problem(401, "unauthorized");

    // Unknown phones get the same 202 but no code; with self-registration they sign up.
    let before = seen.lock().await.len();
    let other = "+919800000002";
    assert_eq!(
        app.post(
            "/api/v1/auth/otp/request",
            None,
            json!({"tenant": "acme", "phone": other})
        )
        .await
        .status,
        202
    );
    assert_eq!(seen.lock().await.len(), before);
    app.call(
        Method::PUT,
        "/api/v1/tenants/acme/config/auth.self_registration",
        Some(&staff),
        Some(json!({"value": true})),
    )
    .await;
    app.post(
        "/api/v1/auth/otp/request",
        None,
        json!({"tenant": "acme", "phone": other}),
    )
    .await;
    let code = last_code().await;
    let res = app
        .post(
            "/api/v1/auth/otp/verify",
            None,
            json!({"tenant": "acme", "phone": other, "code": code}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["user"]["role"], "user");
}

#[tokio::test]
async fn self_registration_follows_the_tenant_config() {
    let w = world().await;
    let app = &w.app;
    let body = json!({"tenant": "acme", "email": "new@acme.example", "password": USER_PASSWORD, "name": "New"});
    app.post("/api/v1/auth/register", None, body.clone())
        .await
        .assert_problem(403, "forbidden");
    app.call(
        Method::PUT,
        "/api/v1/tenants/acme/config/auth.self_registration",
        Some(&w.staff),
        Some(json!({"value": true})),
    )
    .await;
    let res = app.post("/api/v1/auth/register", None, body.clone()).await;
    assert_eq!(res.status, 201, "{}", res.text);
    assert_eq!(res.body["user"]["role"], "user");
    app.post("/api/v1/auth/register", None, body)
        .await
        .assert_problem(409, "conflict");
    app.post(
        "/api/v1/auth/register",
        None,
        json!({"tenant": "acme", "email": "weak@acme.example", "password": "weak", "name": "W"}),
    )
    .await
    .assert_problem(422, "validation_failed");
    app.post(
        "/api/v1/auth/register",
        None,
        json!({"tenant": "ghost", "email": "x@y.example", "password": USER_PASSWORD, "name": "X"}),
    )
    .await
    .assert_problem(404, "tenant_not_found");
    app.post(
        "/api/v1/auth/register",
        None,
        json!({"tenant": "sleepy", "email": "x@y.example", "password": USER_PASSWORD, "name": "X"}),
    )
    .await
    .assert_problem(403, "tenant_suspended");
}
