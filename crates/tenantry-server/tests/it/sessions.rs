//! Sessions that end when they must: a password change revokes every
//! refresh token of the user, a logout racing a refresh leaves no live
//! token, and access tokens cannot be made to live for long.

use crate::support::{TestApp, USER_PASSWORD};
use reqwest::Method;
use serde_json::json;

async fn refresh_token(app: &TestApp, tenant: &str, email: &str, password: &str) -> String {
    let login = app.tenant_login(tenant, email, password).await;
    assert_eq!(login.status, 200, "{}", login.text);
    login.body["refresh_token"]
        .as_str()
        .expect("refresh token")
        .to_owned()
}

#[tokio::test]
async fn a_password_change_revokes_the_users_refresh_tokens() {
    let app = TestApp::spawn().await;
    let staff = app.admin_token().await;
    app.create_tenant(&staff, "pw-change", "basic").await;
    let (user, token) = app
        .tenant_user(&staff, "pw-change", "u@pw-change.example", "user")
        .await;
    app.tenant_user(&staff, "pw-change", "other@pw-change.example", "user")
        .await;
    let laptop = refresh_token(&app, "pw-change", "u@pw-change.example", USER_PASSWORD).await;
    let phone = refresh_token(&app, "pw-change", "u@pw-change.example", USER_PASSWORD).await;
    let others = refresh_token(&app, "pw-change", "other@pw-change.example", USER_PASSWORD).await;
    let new_password = "Another-Passw0rd!";
    let changed = app
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{}", user["id"].as_str().expect("id")),
            Some(&token),
            Some(json!({"password": new_password})),
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.text);
    for stolen in [&laptop, &phone] {
        app.post(
            "/api/v1/auth/refresh",
            None,
            json!({"refresh_token": stolen}),
        )
        .await
        .assert_problem(401, "unauthorized");
    }
    // Other users' sessions are untouched; the new password works.
    let res = app
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({"refresh_token": others}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let fresh = refresh_token(&app, "pw-change", "u@pw-change.example", new_password).await;
    let res = app
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({"refresh_token": fresh}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
}

/// Refresh and logout of one token at once, many times: whichever wins,
/// no token of the family may still refresh afterwards.
#[tokio::test]
async fn a_logout_racing_a_refresh_leaves_no_live_token() {
    let app = TestApp::spawn().await;
    let staff = app.admin_token().await;
    app.create_tenant(&staff, "race-out", "basic").await;
    app.tenant_user(&staff, "race-out", "u@race-out.example", "user")
        .await;
    let mut rotated = 0;
    for _ in 0..40 {
        let token = refresh_token(&app, "race-out", "u@race-out.example", USER_PASSWORD).await;
        let body = json!({"refresh_token": token});
        let (refreshed, logout) = tokio::join!(
            app.post("/api/v1/auth/refresh", None, body.clone()),
            app.post("/api/v1/auth/logout", None, body.clone()),
        );
        assert_eq!(logout.status, 204, "{}", logout.text);
        if refreshed.status == 200 {
            rotated += 1;
            let next = refreshed.body["refresh_token"].as_str().expect("token");
            app.post("/api/v1/auth/refresh", None, json!({"refresh_token": next}))
                .await
                .assert_problem(401, "unauthorized");
        } else {
            refreshed.assert_problem(401, "unauthorized");
        }
    }
    eprintln!("{rotated} of 40 refreshes got a new token before the logout");
}

#[tokio::test]
async fn session_timeout_is_bounded_to_a_day() {
    let app = TestApp::spawn().await;
    let staff = app.admin_token().await;
    app.create_tenant(&staff, "long-lived", "basic").await;
    let set = |secs: u64| {
        app.call(
            Method::PUT,
            "/api/v1/tenants/long-lived/config/session.timeout",
            Some(&staff),
            Some(json!({"value": secs})),
        )
    };
    set(86_401).await.assert_problem(422, "validation_failed");
    assert!(set(86_400).await.status.is_success());
}
