//! Tenant resolution, tenant users, tokens, lockout, OTP, org admins,
//! single-tenant mode.

use crate::support::{ADMIN_PASSWORD, TestApp, USER_PASSWORD};
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::Arc;
use tenantry::clock::ManualClock;

const BASE: &str = "tenants.test";

struct World {
    app: TestApp,
    staff: String,
    a: Value,
    b: Value,
    admin_a: String,
}

/// Tenants `acme` (domain acme.example), `beta` (beta.example) and `sleepy` (suspended).
async fn world() -> World {
    let app = TestApp::spawn_with(tempfile::tempdir().expect("dir"), |s| {
        s.base_domain = Some(BASE.into())
    })
    .await;
    let staff = app.admin_token().await;
    let a = app
        .post(
            "/api/v1/tenants",
            Some(&staff),
            json!({"name": "Acme", "slug": "acme", "domain": "acme.example"}),
        )
        .await
        .body;
    let b = app
        .post(
            "/api/v1/tenants",
            Some(&staff),
            json!({"name": "Beta", "slug": "beta", "domain": "beta.example"}),
        )
        .await
        .body;
    app.post(
        "/api/v1/tenants",
        Some(&staff),
        json!({"name": "Sleepy", "slug": "sleepy", "domain": "sleepy.example"}),
    )
    .await;
    app.post("/api/v1/tenants/sleepy/suspend", Some(&staff), json!({}))
        .await;
    let (_, admin_a) = app
        .tenant_user(&staff, "acme", "admin@acme.example", "admin")
        .await;
    World {
        app,
        staff,
        a,
        b,
        admin_a,
    }
}

fn id(t: &Value) -> String {
    t["id"].as_str().expect("id").to_owned()
}

/// One identification method: how a request names tenant `slug` (with its id and domain).
fn name_tenant(
    method: &str,
    slug: &str,
    tenant_id: &str,
    domain: &str,
) -> (String, Vec<(String, String)>) {
    match method {
        "x-tenant-id" => (
            "/api/v1/users".into(),
            vec![("x-tenant-id".into(), tenant_id.into())],
        ),
        "x-tenant-slug" => (
            "/api/v1/users".into(),
            vec![("x-tenant-slug".into(), slug.into())],
        ),
        "subdomain" => (
            "/api/v1/users".into(),
            vec![("host".into(), format!("{slug}.{BASE}"))],
        ),
        "custom-domain" => ("/api/v1/users".into(), vec![("host".into(), domain.into())]),
        "query" => (format!("/api/v1/users?tenant={slug}"), vec![]),
        other => panic!("unknown method {other}"),
    }
}

async fn call(
    app: &TestApp,
    token: &str,
    path: &str,
    headers: &[(String, String)],
) -> crate::support::Res {
    let h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    app.call_with(Method::GET, path, Some(token), &h, None)
        .await
}

#[tokio::test]
async fn every_identification_method_resolves_refuses_unknown_suspended_and_mismatched() {
    let w = world().await;
    let app = &w.app;
    let (a_id, b_id) = (id(&w.a), id(&w.b));
    let sleepy = app.get("/api/v1/tenants/sleepy", Some(&w.staff)).await.body;
    for method in [
        "x-tenant-id",
        "x-tenant-slug",
        "subdomain",
        "custom-domain",
        "query",
    ] {
        // valid
        let (path, headers) = name_tenant(method, "acme", &a_id, "acme.example");
        let res = call(app, &w.staff, &path, &headers).await;
        assert_eq!(res.status, 200, "{method} valid: {}", res.text);
        assert_eq!(res.headers["x-tenant-id"], a_id.as_str(), "{method}");
        // The tenant's own admin may name its own tenant too.
        assert_eq!(
            call(app, &w.admin_a, &path, &headers).await.status,
            200,
            "{method} own tenant"
        );

        // unknown
        let (path, headers) = name_tenant(
            method,
            "ghost",
            &uuid::Uuid::now_v7().to_string(),
            "ghost.example",
        );
        let res = call(app, &w.staff, &path, &headers).await;
        if method == "custom-domain" {
            // A Host that is no tenant's domain names nothing: the staff token names no tenant either.
            res.assert_problem(400, "tenant_required");
        } else {
            res.assert_problem(404, "tenant_not_found");
        }

        // suspended
        let (path, headers) = name_tenant(method, "sleepy", &id(&sleepy), "sleepy.example");
        call(app, &w.staff, &path, &headers)
            .await
            .assert_problem(403, "tenant_suspended");

        // mismatch: a token bound to acme naming beta...
        let (path, headers) = name_tenant(method, "beta", &b_id, "beta.example");
        call(app, &w.admin_a, &path, &headers)
            .await
            .assert_problem(403, "tenant_mismatch");
        // ...and two indicators naming different tenants, whichever comes first.
        let mut both = headers.clone();
        let other = if method == "x-tenant-slug" {
            ("x-tenant-id", a_id.as_str())
        } else {
            ("x-tenant-slug", "acme")
        };
        both.push((other.0.into(), other.1.into()));
        call(app, &w.staff, &path, &both)
            .await
            .assert_problem(403, "tenant_mismatch");
    }

    // The token's own tenant claim.
    let res = call(app, &w.admin_a, "/api/v1/users", &[]).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.headers["x-tenant-id"], a_id.as_str());
    call(
        app,
        &w.admin_a,
        "/api/v1/users",
        &[("x-tenant-id".into(), b_id.clone())],
    )
    .await
    .assert_problem(403, "tenant_mismatch");
    // Staff naming no tenant.
    call(app, &w.staff, "/api/v1/users", &[])
        .await
        .assert_problem(400, "tenant_required");
    // The base domain itself names nothing.
    call(
        app,
        &w.staff,
        "/api/v1/users",
        &[("host".into(), BASE.into())],
    )
    .await
    .assert_problem(400, "tenant_required");
    // A token whose tenant was suspended, then deleted.
    let (_, admin_b) = app
        .tenant_user(&w.staff, "beta", "admin@beta.example", "admin")
        .await;
    app.post("/api/v1/tenants/beta/suspend", Some(&w.staff), json!({}))
        .await;
    call(app, &admin_b, "/api/v1/users", &[])
        .await
        .assert_problem(403, "tenant_suspended");
    app.call(Method::DELETE, "/api/v1/tenants/beta", Some(&w.staff), None)
        .await;
    call(app, &admin_b, "/api/v1/users", &[])
        .await
        .assert_problem(401, "unauthorized");
}

#[tokio::test]
async fn forwarded_host_counts_only_from_trusted_proxies() {
    for (trusted, expected) in [(false, 400u16), (true, 200)] {
        let app = TestApp::spawn_with(tempfile::tempdir().expect("dir"), |s| {
            s.base_domain = Some(BASE.into());
            if trusted {
                s.trusted_proxies = vec!["127.0.0.1".parse().expect("ip")];
            }
        })
        .await;
        let staff = app.admin_token().await;
        app.create_tenant(&staff, "acme", "basic").await;
        let res = app
            .call_with(
                Method::GET,
                "/api/v1/users",
                Some(&staff),
                &[("x-forwarded-host", "acme.tenants.test")],
                None,
            )
            .await;
        assert_eq!(
            res.status.as_u16(),
            expected,
            "trusted={trusted}: {}",
            res.text
        );
    }
}

#[tokio::test]
async fn suspending_a_tenant_refuses_its_very_next_request() {
    let w = world().await;
    // Warm the resolver cache with a successful request.
    assert_eq!(
        call(&w.app, &w.admin_a, "/api/v1/users", &[]).await.status,
        200
    );
    w.app
        .post("/api/v1/tenants/acme/suspend", Some(&w.staff), json!({}))
        .await;
    call(&w.app, &w.admin_a, "/api/v1/users", &[])
        .await
        .assert_problem(403, "tenant_suspended");
    w.app
        .post("/api/v1/tenants/acme/activate", Some(&w.staff), json!({}))
        .await;
    assert_eq!(
        call(&w.app, &w.admin_a, "/api/v1/users", &[]).await.status,
        200
    );
    // A slug change is seen at once too.
    w.app
        .call(
            Method::PATCH,
            "/api/v1/tenants/acme",
            Some(&w.staff),
            Some(json!({"slug": "acme-two"})),
        )
        .await;
    call(
        &w.app,
        &w.staff,
        "/api/v1/users",
        &[("x-tenant-slug".into(), "acme".into())],
    )
    .await
    .assert_problem(404, "tenant_not_found");
    assert_eq!(
        call(
            &w.app,
            &w.staff,
            "/api/v1/users",
            &[("x-tenant-slug".into(), "acme-two".into())]
        )
        .await
        .status,
        200
    );
}

#[tokio::test]
async fn each_role_may_do_exactly_its_user_management_actions() {
    let w = world().await;
    let app = &w.app;
    let (_, manager) = app
        .tenant_user(&w.staff, "acme", "manager@acme.example", "manager")
        .await;
    let (plain_user, user) = app
        .tenant_user(&w.staff, "acme", "user@acme.example", "user")
        .await;
    let actors = [
        ("super_admin", w.staff.clone()),
        ("admin", w.admin_a.clone()),
        ("manager", manager),
        ("user", user),
    ];
    let hdr = [("x-tenant-slug", "acme")];
    let mut n = 0;
    for (who, token) in &actors {
        let t = Some(token.as_str());
        // Fresh targets for each actor.
        let target_user = app
            .call_with(Method::POST, "/api/v1/users", Some(&w.staff), &hdr,
                Some(json!({"email": format!("tu{n}@acme.example"), "password": USER_PASSWORD, "name": "T", "role": "user"})))
            .await
            .body;
        let target_mgr = app
            .call_with(Method::POST, "/api/v1/users", Some(&w.staff), &hdr,
                Some(json!({"email": format!("tm{n}@acme.example"), "password": USER_PASSWORD, "name": "M", "role": "manager"})))
            .await
            .body;
        n += 1;
        let mut outcome = Vec::new();
        for role in ["user", "manager", "admin"] {
            let res = app
                .call_with(Method::POST, "/api/v1/users", t, &hdr,
                    Some(json!({"email": format!("new-{role}-{n}@acme.example"), "password": USER_PASSWORD, "name": "N", "role": role})))
                .await;
            outcome.push((format!("create {role}"), res.status.as_u16()));
        }
        outcome.push((
            "list".into(),
            app.call_with(Method::GET, "/api/v1/users", t, &hdr, None)
                .await
                .status
                .as_u16(),
        ));
        let uid = id(&target_user);
        let mid = id(&target_mgr);
        let get = |path: String| async move {
            app.call_with(Method::GET, &path, t, &hdr, None)
                .await
                .status
                .as_u16()
        };
        outcome.push(("get user".into(), get(format!("/api/v1/users/{uid}")).await));
        let patch = |path: String, body: Value| async move {
            app.call_with(Method::PATCH, &path, t, &hdr, Some(body))
                .await
                .status
                .as_u16()
        };
        outcome.push((
            "rename user".into(),
            patch(format!("/api/v1/users/{uid}"), json!({"name": "R"})).await,
        ));
        outcome.push((
            "promote user".into(),
            patch(format!("/api/v1/users/{uid}"), json!({"role": "manager"})).await,
        ));
        outcome.push((
            "rename manager".into(),
            patch(format!("/api/v1/users/{mid}"), json!({"name": "R"})).await,
        ));
        outcome.push((
            "delete manager".into(),
            app.call_with(
                Method::DELETE,
                &format!("/api/v1/users/{mid}"),
                t,
                &hdr,
                None,
            )
            .await
            .status
            .as_u16(),
        ));
        let delete_user = app
            .call_with(
                Method::DELETE,
                &format!("/api/v1/users/{uid}"),
                t,
                &hdr,
                None,
            )
            .await
            .status
            .as_u16();
        outcome.push(("delete user".into(), delete_user));

        let expected: &[u16] = match *who {
            //                     create u/m/a     list get  ren  promo renM delM delU
            "super_admin" | "admin" => &[201, 201, 201, 200, 200, 200, 200, 200, 204, 204],
            "manager" => &[201, 403, 403, 200, 200, 200, 403, 403, 403, 204],
            "user" => &[403, 403, 403, 403, 403, 403, 403, 403, 403, 403],
            _ => unreachable!(),
        };
        let got: Vec<u16> = outcome.iter().map(|(_, s)| *s).collect();
        assert_eq!(got, expected, "{who}: {outcome:?}");
    }
    // Everyone may read and change themselves (name, password), not their role.
    let (me, token) = app
        .tenant_user(&w.staff, "acme", "self@acme.example", "user")
        .await;
    let me_path = format!("/api/v1/users/{}", id(&me));
    assert_eq!(
        app.call(Method::GET, &me_path, Some(&token), None)
            .await
            .status,
        200
    );
    assert_eq!(
        app.call(
            Method::PATCH,
            &me_path,
            Some(&token),
            Some(json!({"name": "Me"}))
        )
        .await
        .status,
        200
    );
    app.call(
        Method::PATCH,
        &me_path,
        Some(&token),
        Some(json!({"role": "admin"})),
    )
    .await
    .assert_problem(403, "forbidden");
    let _ = plain_user;
}

#[tokio::test]
async fn users_are_unique_per_tenant_quota_bound_and_policy_checked() {
    let w = world().await;
    let app = &w.app;
    let create = |tenant: &'static str, email: &'static str, password: &'static str| {
        let staff = w.staff.clone();
        async move {
            app.call_with(
                Method::POST,
                "/api/v1/users",
                Some(&staff),
                &[("x-tenant-slug", tenant)],
                Some(json!({"email": email, "password": password, "name": "X"})),
            )
            .await
        }
    };
    assert_eq!(
        create("acme", "Same@Example.com", USER_PASSWORD)
            .await
            .status,
        201
    );
    create("acme", "same@example.COM", USER_PASSWORD)
        .await
        .assert_problem(409, "conflict");
    assert_eq!(
        create("beta", "same@example.com", USER_PASSWORD)
            .await
            .status,
        201,
        "another tenant may reuse it"
    );
    for (bad, rule) in [
        ("Sh0rt!", "at least"),
        ("nouppercase-123", "uppercase"),
        ("NoDigits-Here", "digit"),
    ] {
        let res = create("acme", "weak@example.com", bad).await;
        res.assert_problem(422, "validation_failed");
        assert_eq!(res.body["errors"][0]["field"], "password");
        assert!(
            res.body["errors"][0]["message"]
                .as_str()
                .unwrap_or("")
                .contains(rule),
            "{}",
            res.text
        );
    }
    // A stricter tenant policy applies to password changes too.
    app.call(
        Method::PUT,
        "/api/v1/tenants/acme/config/security.password_policy",
        Some(&w.staff),
        Some(json!({"value": {"min_length": 20}})),
    )
    .await;
    let res = create("acme", "long@example.com", USER_PASSWORD).await;
    res.assert_problem(422, "validation_failed");
    // The plan's user quota.
    let gold = json!({"name": "Tiny", "limits": {"max_users": 2, "max_storage_bytes": 1000, "api_requests_per_day": 100,
                      "requests_per_second": 5}});
    app.call(
        Method::PUT,
        "/api/v1/plans/tiny",
        Some(&w.staff),
        Some(gold),
    )
    .await;
    app.create_tenant(&w.staff, "tiny-co", "tiny").await;
    assert_eq!(
        create("tiny-co", "one@example.com", USER_PASSWORD)
            .await
            .status,
        201
    );
    assert_eq!(
        create("tiny-co", "two@example.com", USER_PASSWORD)
            .await
            .status,
        201
    );
    create("tiny-co", "three@example.com", USER_PASSWORD)
        .await
        .assert_problem(403, "quota_exceeded");
    // Another tenant's user id is a 404, never a 403.
    let beta_user = create("beta", "other@example.com", USER_PASSWORD)
        .await
        .body;
    app.get(
        &format!("/api/v1/users/{}", id(&beta_user)),
        Some(&w.admin_a),
    )
    .await
    .assert_problem(404, "not_found");
    app.call(
        Method::DELETE,
        &format!("/api/v1/users/{}", id(&beta_user)),
        Some(&w.admin_a),
        None,
    )
    .await
    .assert_problem(404, "not_found");
}

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
        .find_tenant("acme")
        .await
        .expect("lookup")
        .expect("tenant");
    let stored = services
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

#[tokio::test]
async fn org_admins_act_only_inside_their_organization_and_are_audited() {
    let w = world().await;
    let app = &w.app;
    let org = app
        .post(
            "/api/v1/organizations",
            Some(&w.staff),
            json!({"name": "Group"}),
        )
        .await
        .body;
    let org_id = id(&org);
    app.post(
        "/api/v1/tenants",
        Some(&w.staff),
        json!({"name": "G1", "slug": "g-one", "organization_id": org_id}),
    )
    .await;
    let admin = app
        .post(
            &format!("/api/v1/organizations/{org_id}/admins"),
            Some(&w.staff),
            json!({"email": "oa@group.example", "password": ADMIN_PASSWORD, "name": "OA"}),
        )
        .await;
    assert_eq!(admin.status, 201, "{}", admin.text);
    assert_eq!(admin.body["role"], "org_admin");
    let oa_login = app.login("oa@group.example", ADMIN_PASSWORD).await;
    let oa = oa_login.body["access_token"]
        .as_str()
        .expect("token")
        .to_owned();

    let res = app
        .call_with(
            Method::GET,
            "/api/v1/users",
            Some(&oa),
            &[("x-tenant-slug", "g-one")],
            None,
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    app.call_with(
        Method::GET,
        "/api/v1/users",
        Some(&oa),
        &[("x-tenant-slug", "acme")],
        None,
    )
    .await
    .assert_problem(404, "tenant_not_found");
    app.get("/api/v1/tenants/acme", Some(&oa))
        .await
        .assert_problem(404, "tenant_not_found");

    // Both the org admin's and the super-admin's accesses are in the tenant's audit chain.
    app.call_with(
        Method::GET,
        "/api/v1/users",
        Some(&w.staff),
        &[("x-tenant-slug", "g-one")],
        None,
    )
    .await;
    let services = &app.app_state.services;
    let tenant = services
        .find_tenant("g-one")
        .await
        .expect("lookup")
        .expect("tenant");
    let only_reads = tenantry::audit::AuditFilter {
        action: Some("staff_access.get".into()),
        ..Default::default()
    };
    let entries = services
        .store
        .list_audit(Some(&tenant), &only_reads, 0, 100)
        .await
        .expect("audit")
        .into_iter()
        .map(|(_, e)| e)
        .collect::<Vec<_>>();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].actor_scope, format!("organization:{org_id}"));
    assert_eq!(entries[0].action, "staff_access.get");
    assert_eq!(entries[0].resource, "/api/v1/users");
    assert_eq!(entries[1].actor_scope, "platform");
    assert_eq!(
        entries[1].prev_hash.as_deref(),
        Some(entries[0].hash.as_str())
    );
    let verified = services
        .verify_tenant_chains(&tenant)
        .await
        .expect("verify");
    assert!(verified.valid, "{verified:?}");
    // Only super-admins add org admins.
    app.post(
        &format!("/api/v1/organizations/{org_id}/admins"),
        Some(&oa),
        json!({"email": "x@group.example", "password": ADMIN_PASSWORD, "name": "X"}),
    )
    .await
    .assert_problem(403, "forbidden");
}

#[tokio::test]
async fn single_tenant_mode_needs_no_identification() {
    let app = TestApp::spawn_with(tempfile::tempdir().expect("dir"), |s| {
        s.multi_tenant = false
    })
    .await;
    let staff = app.admin_token().await;
    let default = app.get("/api/v1/tenants/default", Some(&staff)).await;
    assert_eq!(default.status, 200, "{}", default.text);
    let default_id = id(&default.body);
    // Staff need not name the tenant.
    let created = app
        .post("/api/v1/users", Some(&staff), json!({"email": "solo@example.com", "password": USER_PASSWORD, "name": "Solo", "role": "admin"}))
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.headers["x-tenant-id"], default_id.as_str());
    // A user of `default` logs in without naming a tenant.
    let login = app.login("solo@example.com", USER_PASSWORD).await;
    assert_eq!(login.status, 200, "{}", login.text);
    assert_eq!(login.body["tenant"]["slug"], "default");
    let token = login.body["access_token"].as_str().expect("token");
    let users = app.get("/api/v1/users", Some(token)).await;
    assert_eq!(users.status, 200);
    assert_eq!(users.body["items"].as_array().map(Vec::len), Some(1));
    // The data dir restarts into the same default tenant.
    let dir = app.stop().await;
    let app = TestApp::spawn_with(dir, |s| s.multi_tenant = false).await;
    let staff = app.admin_token().await;
    assert_eq!(
        app.get("/api/v1/tenants/default", Some(&staff)).await.body["id"],
        default_id.as_str()
    );
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
