//! Attempt limits that must hold under parallel load and behind proxies:
//! login lockout counted before the password check, the client address a
//! trusted proxy forwards, OTP sends per address and per tenant.

use crate::support::{Http, TestApp, USER_PASSWORD};
use reqwest::Method;
use serde_json::json;

/// Sends `n` logins for one account at once; answers their statuses.
async fn parallel_logins(
    http: &Http,
    tenant: &str,
    email: &str,
    password: &str,
    n: usize,
) -> Vec<u16> {
    let tries = (0..n).map(|_| http.tenant_login(tenant, email, password));
    futures::future::join_all(tries)
        .await
        .into_iter()
        .map(|r| r.status.as_u16())
        .collect()
}

#[tokio::test]
async fn parallel_wrong_passwords_get_no_more_guesses_than_the_limit() {
    let app = TestApp::spawn().await;
    let staff = app.admin_token().await;
    app.create_tenant(&staff, "guessed", "basic").await;
    app.tenant_user(&staff, "guessed", "victim@guessed.example", "user")
        .await;
    let statuses = parallel_logins(
        &app,
        "guessed",
        "victim@guessed.example",
        "wrong-Passw0rd!",
        60,
    )
    .await;
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((checked, refused), (5, 55), "{statuses:?}");
    // Locked out now, right password or not.
    app.tenant_login("guessed", "victim@guessed.example", USER_PASSWORD)
        .await
        .assert_problem(429, "rate_limited");
}

/// Three failures from one address lock that address (whatever account).
fn three_per_address(s: &mut tenantry_server::Settings) {
    s.login_max_failures = 100;
    s.login_max_failures_per_address = 3;
}

async fn fail_from(app: &TestApp, forwarded_for: &str, account: usize) -> u16 {
    app.call_with(
        Method::POST,
        "/api/v1/auth/login",
        None,
        &[("x-forwarded-for", forwarded_for)],
        Some(
            json!({"email": format!("nobody{account}@example.com"), "password": "wrong-Passw0rd!"}),
        ),
    )
    .await
    .status
    .as_u16()
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_limited_not_the_proxy() {
    let app = TestApp::spawn_with(tempfile::tempdir().expect("dir"), |s| {
        three_per_address(s);
        s.trusted_proxies = vec!["127.0.0.1".parse().expect("ip")];
    })
    .await;
    for account in 0..3 {
        assert_eq!(fail_from(&app, "6.6.6.6, 198.51.100.1", account).await, 401);
    }
    // The client is locked out, whatever it prepends…
    assert_eq!(fail_from(&app, "7.7.7.7, 198.51.100.1", 3).await, 429);
    // …and the proxy's other clients are not.
    assert_eq!(fail_from(&app, "198.51.100.2", 4).await, 401);
}

#[tokio::test]
async fn an_untrusted_peer_cannot_escape_its_limit_by_forwarding_headers() {
    let app = TestApp::spawn_with(tempfile::tempdir().expect("dir"), three_per_address).await;
    for account in 0..3 {
        let spoofed = format!("198.51.100.{account}");
        assert_eq!(fail_from(&app, &spoofed, account).await, 401);
    }
    assert_eq!(fail_from(&app, "198.51.100.9", 3).await, 429);
}

#[tokio::test]
async fn otp_sends_are_limited_per_client_address_and_per_tenant() {
    let app = TestApp::spawn_with(tempfile::tempdir().expect("dir"), |s| {
        s.trusted_proxies = vec!["127.0.0.1".parse().expect("ip")];
        s.otp_sends_per_address_per_hour = 2;
        s.otp_sends_per_tenant_per_hour = 3;
    })
    .await;
    let staff = app.admin_token().await;
    app.create_tenant(&staff, "pumped", "basic").await;
    let on = app
        .call(
            Method::PUT,
            "/api/v1/tenants/pumped/config/auth.otp",
            Some(&staff),
            Some(json!({"value": true})),
        )
        .await;
    assert!(on.status.is_success(), "{}", on.text);
    let app = &app;
    let send = |from: &'static str, phone: &'static str| async move {
        app.call_with(
            Method::POST,
            "/api/v1/auth/otp/request",
            None,
            &[("x-forwarded-for", from)],
            Some(json!({"tenant": "pumped", "phone": phone})),
        )
        .await
    };
    // Different phones each time: the per-phone limit is not what refuses.
    assert_eq!(send("198.51.100.1", "+15550000001").await.status, 202);
    assert_eq!(send("198.51.100.1", "+15550000002").await.status, 202);
    send("198.51.100.1", "+15550000003")
        .await
        .assert_problem(429, "rate_limited");
    assert_eq!(send("198.51.100.2", "+15550000003").await.status, 202);
    let res = send("198.51.100.3", "+15550000004").await;
    res.assert_problem(429, "rate_limited");
    assert!(res.headers.get("retry-after").is_some(), "a Retry-After");
}
