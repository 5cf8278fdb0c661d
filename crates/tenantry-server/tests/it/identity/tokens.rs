//! Access and refresh tokens: the contract's claims, session timeouts,
//! revocation, rotation, and every bad token refused.

use super::{id, world};
use crate::support::{ADMIN_PASSWORD, USER_PASSWORD};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn tenant_tokens_carry_the_contract_claims_and_the_session_timeout() {
    let w = world().await;
    let app = &w.app;
    app.call(
        Method::PUT,
        "/api/v1/tenants/acme/config/session.timeout",
        Some(&w.staff),
        Some(json!({"value": 1})),
    )
    .await;
    let login = app
        .tenant_login("acme", "ADMIN@acme.example", USER_PASSWORD)
        .await;
    assert_eq!(login.status, 200, "{}", login.text);
    assert_eq!(login.body["expires_in"], 1);
    assert_eq!(login.body["tenant"]["slug"], "acme");
    assert_eq!(login.body["user"]["role"], "admin");
    let token = login.body["access_token"].as_str().expect("token");
    use base64::Engine;
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).expect("payload"))
            .expect("b64"),
    )
    .expect("claims");
    assert_eq!(claims["tid"], id(&w.a).as_str());
    assert_eq!(claims["role"], "admin");
    assert_eq!(
        claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat"),
        1
    );
    let me = app.get("/api/v1/auth/me", Some(token)).await;
    assert_eq!(me.body["user"]["email"], "admin@acme.example");
    // Expired one second later: 401. (Polls instead of a fixed sleep.)
    let mut status = 200;
    for _ in 0..40 {
        status = app
            .get("/api/v1/auth/me", Some(token))
            .await
            .status
            .as_u16();
        if status == 401 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, 401);
    // Login against another tenant with the same credentials fails alike.
    app.tenant_login("beta", "admin@acme.example", USER_PASSWORD)
        .await
        .assert_problem(401, "unauthorized");
}

#[tokio::test]
async fn tokens_of_deleted_users_and_changed_roles_are_refused() {
    let w = world().await;
    let app = &w.app;
    let (user, token) = app
        .tenant_user(&w.staff, "acme", "gone@acme.example", "manager")
        .await;
    assert_eq!(app.get("/api/v1/auth/me", Some(&token)).await.status, 200);
    app.call(
        Method::PATCH,
        &format!("/api/v1/users/{}", id(&user)),
        Some(&w.admin_a),
        Some(json!({"role": "user"})),
    )
    .await;
    app.get("/api/v1/auth/me", Some(&token))
        .await
        .assert_problem(401, "unauthorized");
    app.call(
        Method::DELETE,
        &format!("/api/v1/users/{}", id(&user)),
        Some(&w.admin_a),
        None,
    )
    .await;
    app.get("/api/v1/auth/me", Some(&token))
        .await
        .assert_problem(401, "unauthorized");
    // Deactivated users cannot log in.
    let (user2, _) = app
        .tenant_user(&w.staff, "acme", "off@acme.example", "user")
        .await;
    app.call(
        Method::PATCH,
        &format!("/api/v1/users/{}", id(&user2)),
        Some(&w.admin_a),
        Some(json!({"active": false})),
    )
    .await;
    app.tenant_login("acme", "off@acme.example", USER_PASSWORD)
        .await
        .assert_problem(401, "unauthorized");
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let w = world().await;
    let app = &w.app;
    let login = app
        .tenant_login("acme", "admin@acme.example", USER_PASSWORD)
        .await;
    let r1 = login.body["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    let second = app
        .post("/api/v1/auth/refresh", None, json!({"refresh_token": r1}))
        .await;
    assert_eq!(second.status, 200, "{}", second.text);
    let r2 = second.body["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    assert_ne!(r1, r2);
    assert_eq!(
        app.get("/api/v1/auth/me", second.body["access_token"].as_str())
            .await
            .status,
        200
    );
    // r1 again: stolen. The whole family dies, r2 included.
    app.post("/api/v1/auth/refresh", None, json!({"refresh_token": r1}))
        .await
        .assert_problem(401, "unauthorized");
    app.post("/api/v1/auth/refresh", None, json!({"refresh_token": r2}))
        .await
        .assert_problem(401, "unauthorized");
    // Logout revokes; an unknown token is refused.
    let login = app
        .tenant_login("acme", "admin@acme.example", USER_PASSWORD)
        .await;
    let r3 = login.body["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    assert_eq!(
        app.post("/api/v1/auth/logout", None, json!({"refresh_token": r3}))
            .await
            .status,
        204
    );
    app.post("/api/v1/auth/refresh", None, json!({"refresh_token": r3}))
        .await
        .assert_problem(401, "unauthorized");
    app.post(
        "/api/v1/auth/refresh",
        None,
        json!({"refresh_token": "made-up"}),
    )
    .await
    .assert_problem(401, "unauthorized");
    // Platform users refresh too.
    let platform = app.login(crate::support::ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let res = app
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({"refresh_token": platform.body["refresh_token"]}),
        )
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body["user"]["role"], "super_admin");
}

#[tokio::test]
async fn every_bad_token_kind_is_refused_over_http() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    let w = world().await;
    let app = &w.app;
    let secret = std::fs::read(app.dir.path().join("jwt.secret")).expect("secret");
    let me = app.get("/api/v1/auth/me", Some(&w.admin_a)).await.body;
    let now = chrono::Utc::now().timestamp();
    let claims = |iss: &str, aud: &str, exp: i64| {
        json!({"sub": me["user"]["id"], "tid": id(&w.a), "role": "admin", "iat": now, "exp": exp,
               "iss": iss, "aud": aud, "jti": "t"})
    };
    let sign = |alg: Algorithm, key: &[u8], c: &Value| {
        encode(&Header::new(alg), c, &EncodingKey::from_secret(key)).expect("sign")
    };
    let good = claims("tenantry", "tenantry-api", now + 600);
    // The control: correctly signed claims pass.
    assert_eq!(
        app.get(
            "/api/v1/auth/me",
            Some(&sign(Algorithm::HS256, &secret, &good))
        )
        .await
        .status,
        200
    );
    use base64::Engine;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let cases = [
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "JWT"})),
                b64(&good)
            ),
        ),
        ("wrong algorithm", sign(Algorithm::HS384, &secret, &good)),
        (
            "bad signature",
            sign(
                Algorithm::HS256,
                b"some-other-secret-of-enough-length",
                &good,
            ),
        ),
        (
            "wrong issuer",
            sign(
                Algorithm::HS256,
                &secret,
                &claims("evil", "tenantry-api", now + 600),
            ),
        ),
        (
            "wrong audience",
            sign(
                Algorithm::HS256,
                &secret,
                &claims("tenantry", "other", now + 600),
            ),
        ),
        (
            "expired",
            sign(
                Algorithm::HS256,
                &secret,
                &claims("tenantry", "tenantry-api", now - 1),
            ),
        ),
        ("not a jwt", "abc".to_owned()),
    ];
    for (kind, token) in cases {
        app.get("/api/v1/auth/me", Some(&token))
            .await
            .assert_problem(401, "unauthorized");
        let res = app
            .call_with(Method::GET, "/api/v1/users", Some(&token), &[], None)
            .await;
        assert_eq!(res.status, 401, "{kind}");
    }
}
