//! Tenant health (database check, traffic window figures) and the bounded
//! per-tenant `/metrics` series.

use crate::support::{TestApp, settings_for};
use axum::routing::get;
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::Arc;
use tenantry::clock::ManualClock;
use tenantry_server::api::scope::TenantScope;
use tenantry_server::error::Error;
use tenantry_server::{App, Settings};

/// The real app plus `/boom`, a tenant-scoped route that always answers 500
/// (nothing in the API fails on purpose).
async fn spawn_with_failing_route(
    clock: Arc<ManualClock>,
    tweak: impl FnOnce(&mut Settings),
) -> TestApp {
    let dir = tempfile::tempdir().expect("dir");
    let mut settings = settings_for(dir.path()).await;
    tweak(&mut settings);
    let built = App::build_with_clock(settings, clock)
        .await
        .expect("app builds");
    let (routes, _) = tenantry_server::api::documented_routes();
    let routes = routes.route(
        "/boom",
        get(|_scope: TenantScope| async { Error::Internal("deliberate".into()) }),
    );
    let router = tenantry_server::api::edge(routes, built.state.clone());
    TestApp::serve(dir, built, router).await
}

/// A tenant-scoped request by the super-admin, inside `slug`.
async fn in_tenant(app: &TestApp, staff: &str, slug: &str, path: &str) -> u16 {
    app.call_with(
        Method::GET,
        path,
        Some(staff),
        &[("x-tenant-slug", slug)],
        None,
    )
    .await
    .status
    .as_u16()
}

async fn health(app: &TestApp, token: &str, tenant: &Value) -> Value {
    let id = tenant["id"].as_str().expect("id");
    let res = app
        .get(&format!("/api/v1/tenants/{id}/health"), Some(token))
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    res.body
}

#[tokio::test]
async fn health_reports_the_database_and_the_windows_figures_per_tenant() {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let app = spawn_with_failing_route(clock.clone(), |_| {}).await;
    let staff = app.admin_token().await;
    let busy = app.create_tenant(&staff, "hl-busy", "basic").await;
    let quiet = app.create_tenant(&staff, "hl-quiet", "basic").await;
    app.create_tenant(&staff, "hl-third", "basic").await;

    // 18 answered, 2 refused by the client's mistake (4xx), 2 failed (5xx).
    for _ in 0..18 {
        assert_eq!(
            in_tenant(&app, &staff, "hl-busy", "/api/v1/collections").await,
            200
        );
    }
    for _ in 0..2 {
        let status = in_tenant(&app, &staff, "hl-busy", "/api/v1/collections/0bad/records").await;
        assert!((400..500).contains(&status), "{status}");
    }
    for _ in 0..2 {
        assert_eq!(in_tenant(&app, &staff, "hl-busy", "/boom").await, 500);
    }

    let h = health(&app, &staff, &busy).await;
    assert_eq!(h["checks"]["database"], true, "{h}");
    assert_eq!(h["metrics"]["requests"], 22, "{h}");
    let error_rate = h["metrics"]["error_rate"].as_f64().expect("rate");
    assert!((error_rate - 2.0 / 22.0).abs() < 1e-9, "{h}");
    let (p50, p99) = (
        h["metrics"]["p50_ms"].as_f64().expect("p50"),
        h["metrics"]["p99_ms"].as_f64().expect("p99"),
    );
    assert!(0.0 < p50 && p50 <= p99, "{h}");
    // 9 % of the requests failed: over the 5 % threshold.
    assert_eq!(h["status"], "degraded", "{h}");
    assert!(h["last_checked"].is_string(), "{h}");

    // The other tenant's figures are its own; asking is not a request of it.
    for _ in 0..2 {
        let q = health(&app, &staff, &quiet).await;
        assert_eq!(q["status"], "healthy", "{q}");
        assert_eq!(q["checks"]["database"], true, "{q}");
        assert_eq!(
            q["metrics"],
            json!({"p50_ms": 0.0, "p99_ms": 0.0, "error_rate": 0.0, "requests": 0}),
            "{q}"
        );
    }
    assert_eq!(health(&app, &staff, &busy).await["metrics"]["requests"], 22);

    // Only platform staff over the tenant may look, as for usage: a tenant
    // user gets 403 for its own tenant, 404 for any other.
    let (_, user) = app
        .tenant_user(&staff, "hl-third", "a@hl-third.example", "admin")
        .await;
    let id = busy["id"].as_str().expect("id");
    app.get(&format!("/api/v1/tenants/{id}/health"), Some(&user))
        .await
        .assert_problem(404, "tenant_not_found");
    app.get("/api/v1/tenants/hl-third/health", Some(&user))
        .await
        .assert_problem(403, "forbidden");
    app.get(&format!("/api/v1/tenants/{id}/health"), None)
        .await
        .assert_problem(401, "unauthorized");

    // The window moves with the clock: five quiet minutes later it is empty.
    clock.advance(chrono::Duration::minutes(6));
    let later = health(&app, &staff, &busy).await;
    assert_eq!(later["metrics"]["requests"], 0, "{later}");
    assert_eq!(later["status"], "healthy", "{later}");
}

/// The value of the first `/metrics` line of `name` whose labels include all of `labels`.
fn series(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn metrics_have_per_plan_series_and_tenant_series_for_the_busiest_only() {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let app = spawn_with_failing_route(clock, |s| s.metrics_top_tenants = 2).await;
    let staff = app.admin_token().await;
    // A plan of this test's own: the metrics recorder is shared by every
    // test of the process, its series are this test's alone.
    let plan = json!({"name": "Metered", "limits": {"max_users": 10, "max_storage_bytes": 1000000,
                      "api_requests_per_day": null, "requests_per_second": null}});
    let res = app
        .call(
            Method::PUT,
            "/api/v1/plans/metered",
            Some(&staff),
            Some(plan),
        )
        .await;
    assert!(res.status.is_success(), "{}", res.text);
    let mut ids = Vec::new();
    for (slug, requests) in [("mt-most", 5), ("mt-some", 3), ("mt-few", 1)] {
        let t = app.create_tenant(&staff, slug, "metered").await;
        ids.push(t["id"].as_str().expect("id").to_owned());
        for _ in 0..requests {
            assert_eq!(
                in_tenant(&app, &staff, slug, "/api/v1/collections").await,
                200
            );
        }
    }
    assert_eq!(in_tenant(&app, &staff, "mt-few", "/boom").await, 500);

    let text = app.get("/metrics", None).await.text;
    let window = |text: &str, id: &str| {
        series(
            text,
            "tenant_requests_window",
            &[&format!("tenant_id=\"{id}\"")],
        )
    };
    assert_eq!(window(&text, &ids[0]), Some(5.0), "{text}");
    assert_eq!(window(&text, &ids[1]), Some(3.0), "{text}");
    assert_eq!(window(&text, &ids[2]), None, "third busiest has no series");
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("tenant_requests_window{"))
            .count(),
        2,
        "{text}"
    );
    let plan_series = |class: &str| {
        series(
            &text,
            "tenant_requests_total",
            &["plan=\"metered\"", &format!("status_class=\"{class}\"")],
        )
    };
    assert_eq!(plan_series("2xx"), Some(9.0), "{text}");
    assert_eq!(plan_series("5xx"), Some(1.0), "{text}");
    // The per-route series are still there.
    assert!(text.contains("http_requests_total{"), "{text}");

    // A tenant that becomes busier takes the place of the least busy one,
    // whose series goes.
    for _ in 0..10 {
        in_tenant(&app, &staff, "mt-few", "/api/v1/collections").await;
    }
    let text = app.get("/metrics", None).await.text;
    assert_eq!(window(&text, &ids[2]), Some(12.0), "{text}");
    assert_eq!(window(&text, &ids[0]), Some(5.0), "{text}");
    assert_eq!(window(&text, &ids[1]), None, "{text}");
}
