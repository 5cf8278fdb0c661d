//! Errors, limits, operations endpoints, keys and restarts.

use crate::support::{ADMIN_EMAIL, ADMIN_PASSWORD, TestApp};
use axum::routing::get;
use reqwest::Method;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;

#[tokio::test]
async fn every_error_path_answers_problem_json() {
    let app = TestApp::spawn().await;
    let token = app.admin_token().await;

    app.get("/no/such/route", None)
        .await
        .assert_problem(404, "not_found");
    app.call(Method::DELETE, "/healthz", None, None)
        .await
        .assert_problem(405, "method_not_allowed");
    app.get("/api/v1/tenants", None)
        .await
        .assert_problem(401, "unauthorized");
    app.get("/api/v1/tenants", Some("not-a-jwt"))
        .await
        .assert_problem(401, "unauthorized");
    app.get("/api/v1/tenants/nope-nope", Some(&token))
        .await
        .assert_problem(404, "tenant_not_found");

    let malformed = app
        .client
        .post(format!("{}/api/v1/tenants", app.base))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .expect("send");
    TestApp::read(malformed)
        .await
        .assert_problem(400, "invalid_json");

    let wrong_shape = app
        .post(
            "/api/v1/tenants",
            Some(&token),
            json!({"name": 5, "slug": "abc"}),
        )
        .await;
    wrong_shape.assert_problem(422, "validation_failed");
    assert_eq!(wrong_shape.body["errors"][0]["field"], "name");

    let invalid = app
        .post(
            "/api/v1/tenants",
            Some(&token),
            json!({"name": "", "slug": "A", "plan": "gold"}),
        )
        .await;
    invalid.assert_problem(422, "validation_failed");
    let fields: Vec<&str> = invalid.body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(fields, ["name", "slug", "plan"]);

    app.create_tenant(&token, "dupe", "basic").await;
    app.post(
        "/api/v1/tenants",
        Some(&token),
        json!({"name": "Again", "slug": "dupe"}),
    )
    .await
    .assert_problem(409, "conflict");

    let wrong_password = app.login(ADMIN_EMAIL, "wrong-password").await;
    wrong_password.assert_problem(401, "unauthorized");
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let app = TestApp::spawn_with(tempfile::tempdir().expect("dir"), |s| {
        s.max_body_bytes = 1024
    })
    .await;
    let token = app.admin_token().await;
    let big = json!({"name": "x".repeat(4096), "slug": "big-one"});
    app.post("/api/v1/tenants", Some(&token), big)
        .await
        .assert_problem(413, "payload_too_large");
    // Just under the limit is fine.
    app.post(
        "/api/v1/tenants",
        Some(&token),
        json!({"name": "small", "slug": "small-one"}),
    )
    .await;
}

#[tokio::test]
async fn a_panicking_handler_becomes_a_500_problem_without_internals() {
    let dir = tempfile::tempdir().expect("dir");
    let built = tenantry_server::App::build(crate::support::test_settings(dir.path()))
        .await
        .expect("build");
    let routes = axum::Router::new().route(
        "/boom",
        get(|| async {
            if std::hint::black_box(true) {
                panic!("secret detail /etc/passwd SELECT * FROM tenants");
            }
            "unreachable"
        }),
    );
    let router = tenantry_server::api::edge(routes, built.state.clone());
    let app = TestApp::serve(dir, built, router).await;
    let res = app.get("/boom", None).await;
    res.assert_problem(500, "internal_error");
    assert!(
        !res.text.contains("secret") && !res.text.contains("SELECT") && !res.text.contains("/etc")
    );
    // The server is still up, and the route it has no handler for is a problem too.
    app.get("/boom", None)
        .await
        .assert_problem(500, "internal_error");
    app.get("/elsewhere", None)
        .await
        .assert_problem(404, "not_found");
}

#[tokio::test]
async fn request_ids_are_echoed_when_valid_and_generated_otherwise() {
    let app = TestApp::spawn().await;
    let res = app
        .client
        .get(format!("{}/healthz", app.base))
        .header("x-request-id", "trace-abc-123")
        .send()
        .await
        .expect("send");
    assert_eq!(res.headers()["x-request-id"], "trace-abc-123");
    let res = app.get("/healthz", None).await;
    let generated = res.headers["x-request-id"].to_str().expect("ascii");
    assert!(uuid::Uuid::parse_str(generated).is_ok());
}

#[tokio::test]
async fn operations_endpoints_answer() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/healthz", None).await.status, 200);
    let ready = app.get("/readyz", None).await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.body["status"], "ready");
    app.get("/api/v1/plans", None).await; // one labelled request for the metrics below
    let metrics = app.get("/metrics", None).await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.text.contains("http_requests_total{"),
        "{}",
        metrics.text
    );
    assert!(
        metrics.text.contains("route=\"/api/v1/plans\""),
        "{}",
        metrics.text
    );
    assert!(metrics.text.contains("status=\"401\""), "{}", metrics.text);
    assert!(
        metrics
            .text
            .contains("http_request_duration_seconds_bucket"),
        "{}",
        metrics.text
    );
    let docs = app.get("/docs/", None).await;
    assert_eq!(docs.status, 200);
    assert!(docs.text.contains("swagger"), "{}", docs.text);
}

#[tokio::test]
async fn openapi_lists_every_route() {
    let app = TestApp::spawn().await;
    let doc = app.get("/openapi.json", None).await;
    assert_eq!(doc.status, 200);
    let expected = [
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
        ("post", "/api/v1/auth/login"),
        ("post", "/api/v1/auth/register"),
        ("post", "/api/v1/auth/refresh"),
        ("post", "/api/v1/auth/logout"),
        ("get", "/api/v1/auth/me"),
        ("post", "/api/v1/auth/otp/request"),
        ("post", "/api/v1/auth/otp/verify"),
        ("post", "/api/v1/users"),
        ("get", "/api/v1/users"),
        ("get", "/api/v1/users/{id}"),
        ("patch", "/api/v1/users/{id}"),
        ("delete", "/api/v1/users/{id}"),
        ("post", "/api/v1/organizations/{id}/admins"),
        ("get", "/api/v1/tenants/{id}/usage"),
        ("get", "/api/v1/tenants/{id}/health"),
        ("get", "/api/v1/collections"),
        ("put", "/api/v1/collections/{name}"),
        ("post", "/api/v1/collections/{name}/records"),
        ("get", "/api/v1/collections/{name}/records"),
        ("get", "/api/v1/collections/{name}/records/{id}"),
        ("put", "/api/v1/collections/{name}/records/{id}"),
        ("patch", "/api/v1/collections/{name}/records/{id}"),
        ("delete", "/api/v1/collections/{name}/records/{id}"),
        ("get", "/api/v1/collections/{name}/stats"),
        ("get", "/api/v1/analytics/compare"),
        ("post", "/api/v1/tenants"),
        ("get", "/api/v1/tenants"),
        ("get", "/api/v1/tenants/{id}"),
        ("patch", "/api/v1/tenants/{id}"),
        ("delete", "/api/v1/tenants/{id}"),
        ("post", "/api/v1/tenants/{id}/suspend"),
        ("post", "/api/v1/tenants/{id}/activate"),
        ("post", "/api/v1/tenants/{id}/plan"),
        ("get", "/api/v1/tenants/{id}/config"),
        ("get", "/api/v1/tenants/{id}/config/{key}"),
        ("put", "/api/v1/tenants/{id}/config/{key}"),
        ("delete", "/api/v1/tenants/{id}/config/{key}"),
        ("get", "/api/v1/tenants/{id}/branding"),
        ("put", "/api/v1/tenants/{id}/branding"),
        ("get", "/api/v1/tenants/{id}/features"),
        ("get", "/api/v1/plans"),
        ("get", "/api/v1/plans/{code}"),
        ("put", "/api/v1/plans/{code}"),
        ("post", "/api/v1/organizations"),
        ("get", "/api/v1/organizations"),
        ("get", "/api/v1/organizations/{id}"),
        ("get", "/api/v1/organizations/{id}/tenants"),
        ("get", "/api/v1/audit"),
        ("get", "/api/v1/tenants/{id}/audit"),
        ("get", "/api/v1/tenants/{id}/audit/verify"),
        ("get", "/api/v1/platform/audit"),
        ("get", "/api/v1/jobs"),
        ("get", "/api/v1/jobs/{id}"),
        ("get", "/api/v1/jobs/{id}/result"),
        ("post", "/api/v1/tenants/{id}/export"),
        ("post", "/api/v1/tenants/{id}/import"),
        ("post", "/api/v1/tenants/{id}/move"),
        ("get", "/admin"),
        ("get", "/admin/{file}"),
    ];
    let paths = doc.body["paths"].as_object().expect("paths");
    let documented: usize = paths
        .values()
        .map(|p| p.as_object().map_or(0, |m| m.len()))
        .sum();
    for (method, path) in expected {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from OpenAPI"
        );
        // The route documented is a route served: no 404 route-fallback for it.
        let probe = app
            .call(
                method.parse().expect("method"),
                &path
                    .replace("{id}", "x")
                    .replace("{key}", "k")
                    .replace("{code}", "c")
                    .replace("{file}", "app.js"),
                None,
                None,
            )
            .await;
        assert!(
            !(probe.status == 404 && probe.body["detail"] == "route not found"),
            "{method} {path} is documented but not routed"
        );
    }
    assert_eq!(
        documented,
        expected.len(),
        "a route is documented that this test does not know"
    );
}

#[tokio::test]
async fn key_files_are_private_and_reused_across_restarts() {
    let app = TestApp::spawn().await;
    let token = app.admin_token().await;
    for name in ["jwt.secret", "master.key"] {
        let mode = std::fs::metadata(app.dir.path().join(name))
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
    let before = std::fs::read(app.dir.path().join("master.key")).expect("read");
    let dir = app.stop().await;
    let app = TestApp::spawn_with(dir, |_| {}).await;
    assert_eq!(
        std::fs::read(app.dir.path().join("master.key")).expect("read"),
        before
    );
    // A token from before the restart still verifies: the JWT secret was kept.
    assert_eq!(app.get("/api/v1/plans", Some(&token)).await.status, 200);
}

#[tokio::test]
async fn first_start_without_a_password_generates_one() {
    let dir = tempfile::tempdir().expect("dir");
    let app = TestApp::spawn_with(dir, |s| {
        s.admin_email = None;
        s.admin_password = None;
    })
    .await;
    // The generated password is printed, not guessable: the default email exists but a guess fails.
    app.login("admin@tenantry.local", ADMIN_PASSWORD)
        .await
        .assert_problem(401, "unauthorized");
    let store = &app.app_state.services.core.store;
    assert_eq!(store.count_super_admins().await.expect("count"), 1);
}

/// With `metrics_token` set, `/metrics` (which names the busiest tenants)
/// answers only the scraper that presents it.
#[tokio::test]
async fn metrics_can_be_kept_for_the_scraper_alone() {
    let app = TestApp::spawn_with(tempfile::tempdir().expect("dir"), |s| {
        s.metrics_token = Some("scrape-secret".into());
    })
    .await;
    app.get("/metrics", None)
        .await
        .assert_problem(401, "unauthorized");
    app.get("/metrics", Some("wrong-secret"))
        .await
        .assert_problem(401, "unauthorized");
    let scraped = app.get("/metrics", Some("scrape-secret")).await;
    assert_eq!(scraped.status, 200);
    assert!(
        scraped.text.contains("http_requests_total"),
        "{}",
        scraped.text
    );
    // Without a token, /metrics stays open (the default, for a private network).
    let open = TestApp::spawn().await;
    assert_eq!(open.get("/metrics", None).await.status, 200);
}
