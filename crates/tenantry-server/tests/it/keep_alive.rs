//! One keep-alive client, many mixed requests, no dropped connection: every
//! response either leaves its connection usable or says
//! `Connection: close` (issue 20: after a refusal sent before the body was
//! read, the server closed silently and the client's next request met a
//! dead socket, about once per thousand requests).
//!
//! The client is hyper's single-connection HTTP/1.1 client: no pool and no
//! retry to hide a close, unlike reqwest's.

use crate::served::Server;
use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

const REQUESTS: usize = 20_000;
/// The body limit of the server under test: bodies from here to 100 KB
/// are refused with 413 before they are read in full.
const MAX_BODY: usize = 32 * 1024;

/// One request of the mix, named for the report.
struct Call {
    kind: &'static str,
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

/// A small deterministic generator: the same mix on every run.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn between(&mut self, low: usize, high: usize) -> usize {
        low + self.below(high - low)
    }
}

/// A JSON body of about `size` bytes.
fn padded(size: usize) -> Vec<u8> {
    json!({"pad": "p".repeat(size.saturating_sub(10))})
        .to_string()
        .into_bytes()
}

async fn connect(addr: &str) -> SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    sender
}

/// Status, whether the response said `Connection: close`, and its body;
/// or the transport error.
async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    addr: &str,
    call: &Call,
) -> Result<(u16, bool, Bytes), hyper::Error> {
    let mut req = hyper::Request::builder()
        .method(call.method)
        .uri(&call.path)
        .header("host", addr)
        .header("content-type", "application/json");
    for (name, value) in &call.headers {
        req = req.header(*name, value);
    }
    let req = req
        .body(Full::new(Bytes::from(call.body.clone())))
        .expect("request");
    sender.ready().await?;
    let res = sender.send_request(req).await?;
    let status = res.status().as_u16();
    let close = res
        .headers()
        .get("connection")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    let body = res.into_body().collect().await?.to_bytes();
    Ok((status, close, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_keep_alive_client_sees_no_dropped_connection_in_a_long_mixed_run() {
    let max_body = MAX_BODY.to_string();
    let server = Server::start(
        tempfile::tempdir().expect("dir"),
        &[("TENANTRY_MAX_BODY_BYTES", &max_body)],
    )
    .await;
    let staff = server.admin().await;
    let http = &server.http;
    // `a` writes freely; `b` is on a plan of 10 requests a second and 1,000
    // a day, so its share of the mix draws 429s and then quota 403s.
    http.create_busy_tenant(&staff, "ka-a", "shared").await;
    http.create_tenant(&staff, "ka-b", "basic").await;
    let (_, a) = http
        .tenant_user(&staff, "ka-a", "u@ka-a.example", "admin")
        .await;
    let (_, b) = http
        .tenant_user(&staff, "ka-b", "u@ka-b.example", "user")
        .await;
    let bearer = |t: &str| ("authorization", format!("Bearer {t}"));

    let addr = server.addr().to_owned();
    let mut sender = connect(&addr).await;
    let mut mix = Mix(0x9e37_79b9_7f4a_7c15);
    let mut ids: Vec<String> = Vec::new();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let mut closed_after: BTreeSet<&'static str> = BTreeSet::new();
    let mut errors: Vec<String> = Vec::new();
    let mut previous = String::from("nothing");
    for n in 0..REQUESTS {
        let records = "/api/v1/collections/notes/records".to_owned();
        let call = match mix.below(100) {
            0..30 => Call {
                kind: "create",
                method: "POST",
                path: records,
                headers: vec![bearer(&a)],
                body: json!({"n": n}).to_string().into_bytes(),
            },
            30..50 if !ids.is_empty() => Call {
                kind: "read",
                method: "GET",
                path: format!("{records}/{}", ids[mix.below(ids.len())]),
                headers: vec![bearer(&a)],
                body: Vec::new(),
            },
            30..60 => Call {
                kind: "read missing",
                method: "GET",
                path: format!("{records}/{}", uuid::Uuid::now_v7()),
                headers: vec![bearer(&a)],
                body: Vec::new(),
            },
            60..70 => Call {
                kind: "cross-tenant write",
                method: "POST",
                path: records,
                headers: vec![bearer(&a), ("x-tenant-slug", "ka-b".into())],
                body: padded(mix.between(300, MAX_BODY - 1024)),
            },
            70..77 => Call {
                kind: "write without token",
                method: "POST",
                path: records,
                headers: Vec::new(),
                body: padded(mix.between(300, MAX_BODY - 1024)),
            },
            77..85 => Call {
                kind: "write over the limit",
                method: "POST",
                path: records,
                headers: vec![bearer(&a)],
                body: padded(mix.between(MAX_BODY + 1024, 100 * 1024)),
            },
            85..92 => Call {
                // Uploads stream in their handler: this refusal comes
                // before a byte of the body is read.
                kind: "refused upload",
                method: "POST",
                path: "/api/v1/tenants/ka-b/import".into(),
                headers: if mix.below(2) == 0 {
                    vec![bearer(&a)]
                } else {
                    Vec::new()
                },
                body: padded(mix.between(300, 100 * 1024)),
            },
            _ => Call {
                kind: "busy tenant's list",
                method: "GET",
                path: format!("{records}?limit=5"),
                headers: vec![bearer(&b)],
                body: Vec::new(),
            },
        };
        match send(&mut sender, &addr, &call).await {
            Ok((status, close, body)) => {
                *statuses.entry(status).or_default() += 1;
                if call.kind == "create"
                    && status == 201
                    && let Ok(v) = serde_json::from_slice::<Value>(&body)
                    && let Some(id) = v["id"].as_str()
                {
                    ids.push(id.to_owned());
                }
                if close {
                    closed_after.insert(call.kind);
                    sender = connect(&addr).await;
                }
                previous = format!("{} → {status}", call.kind);
            }
            Err(e) => {
                errors.push(format!("request {n} ({}) after {previous}: {e}", call.kind));
                previous = "a transport error".into();
                sender = connect(&addr).await;
            }
        }
    }

    assert!(
        errors.is_empty(),
        "{} transport errors in {REQUESTS} requests; first: {:#?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    for status in [200, 201, 401, 403, 404, 413, 429] {
        assert!(
            statuses.contains_key(&status),
            "the mix never drew a {status}: {statuses:?}"
        );
    }
    // Refusals of bodies the server had read keep the connection; only
    // bodies left unread close it.
    assert!(
        closed_after.is_subset(&BTreeSet::from(["write over the limit", "refused upload"])),
        "closed after {closed_after:?}"
    );
    assert!(
        closed_after.contains("write over the limit"),
        "{closed_after:?}"
    );
}
