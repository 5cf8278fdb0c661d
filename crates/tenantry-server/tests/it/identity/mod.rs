//! Identity: which tenant a request is in (here: every indicator, trusted
//! proxies, suspension, single-tenant mode), and by area in the submodules:
//! tenant users and roles, tokens, logging in.

mod login;
mod tokens;
mod users;

use crate::support::{TestApp, USER_PASSWORD};
use reqwest::Method;
use serde_json::{Value, json};

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
