//! Slow clients and slow work get bounded time: headers, bodies, handlers.

use crate::support::TestApp;
use axum::routing::get;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .expect("connect")
}

/// Everything the server sends until it closes, within `within`.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> String {
    let mut got = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut got))
        .await
        .expect("the server closed the connection in time")
        .expect("read");
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let app = TestApp::spawn_with(tempfile::tempdir().expect("dir"), |s| {
        s.header_read_timeout_ms = 300;
    })
    .await;
    let mut slow = connect(&app).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    read_until_closed(&mut slow, Duration::from_secs(5)).await;
    assert!(started.elapsed() < Duration::from_secs(3));
    // Others are served meanwhile and after.
    assert_eq!(app.get("/healthz", None).await.status, 200);
}

#[tokio::test]
async fn a_trickled_body_times_out_without_holding_the_tenants_slot() {
    let app = TestApp::spawn_with(tempfile::tempdir().expect("dir"), |s| {
        s.request_timeout_ms = 1000;
        s.max_concurrent_per_tenant = 1;
        s.tenant_queue_wait_ms = 50;
    })
    .await;
    let staff = app.admin_token().await;
    app.create_tenant(&staff, "trickled", "basic").await;
    let (_, token) = app
        .tenant_user(&staff, "trickled", "a@trickled.example", "admin")
        .await;
    let mut slow = connect(&app).await;
    let head = format!(
        "POST /api/v1/collections/notes/records HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"n\": "
    );
    slow.write_all(head.as_bytes()).await.expect("write");
    // The tenant's only slot is free while that body trickles in.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let res = app
        .post(
            "/api/v1/collections/notes/records",
            Some(&token),
            serde_json::json!({"n": 1}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let answer = read_until_closed(&mut slow, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
}

#[tokio::test]
async fn a_handler_past_the_request_timeout_answers_503_with_retry_after() {
    let dir = tempfile::tempdir().expect("dir");
    let mut settings = crate::support::settings_for(dir.path()).await;
    settings.request_timeout_ms = 300;
    let built = tenantry_server::App::build(settings).await.expect("build");
    let routes = axum::Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            "late"
        }),
    );
    let router = tenantry_server::api::edge(routes, built.state.clone());
    let app = TestApp::serve(dir, built, router).await;
    let started = Instant::now();
    let res = app.get("/slow", None).await;
    res.assert_problem(503, "unavailable");
    assert!(res.headers.contains_key("retry-after"));
    assert!(started.elapsed() < Duration::from_secs(3));
}
