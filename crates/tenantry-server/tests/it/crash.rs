//! Jobs survive a crash: the real `tenantry serve` is killed with SIGKILL
//! while an import, an export and a move run, and started again. The job
//! is claimed again once its lease runs out and ends as if nothing had
//! happened: every record there once, the audit chain intact.

use crate::served::Server;
use crate::support::Http;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Records in the imported tenant: enough that each job runs for a while.
const RECORDS: usize = 80_000;

/// The settings these tests run the server with: no rate limits (the
/// writers are many), short job leases (a killed job is claimed again soon).
const ENV: &[(&str, &str)] = &[
    ("TENANTRY_RATE_LIMITS", "false"),
    ("TENANTRY_JOB_LEASE_SECS", "2"),
    ("TENANTRY_MOVE_SOURCE_GRACE_MS", "0"),
];

impl Server {
    /// Waits until the job is running, kills the server, starts it again,
    /// and returns the job once it has ended. Asserts it ran twice: the
    /// kill did hit it mid-run.
    async fn crash_during(&mut self, job_id: &Value) -> Value {
        let staff = self.admin().await;
        let id = job_id.as_str().expect("job id");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let job = self
                .http
                .get(&format!("/api/v1/jobs/{id}"), Some(&staff))
                .await;
            assert!(
                job.body["status"] == "queued" || job.body["status"] == "running",
                "the job ended before the kill (make it longer): {}",
                job.text
            );
            if job.body["status"] == "running" && job.body["progress"].as_f64() > Some(0.0) {
                break;
            }
            assert!(Instant::now() < deadline, "never started: {}", job.text);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.kill();
        self.restart().await;
        let staff = self.admin().await;
        let job = self.http.wait_job_end(&staff, job_id).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert!(job["attempts"].as_u64() >= Some(2), "{job}");
        job
    }
}

/// An export of a one-record tenant, the record line repeated with new ids
/// into `RECORDS` records and the header's count to match.
fn grown(export: &str) -> String {
    let mut lines = export.lines();
    let mut header: Value = serde_json::from_str(lines.next().expect("header")).expect("json");
    let mut out = Vec::new();
    for line in lines {
        let item: Value = serde_json::from_str(line).expect("item");
        if item["type"] != "record" {
            out.push(line.to_owned());
            continue;
        }
        for n in 0..RECORDS {
            let mut copy = item.clone();
            copy["id"] = json!(uuid::Uuid::now_v7());
            copy["data"] = json!({"n": n, "text": "a record copied for the crash test"});
            out.push(copy.to_string());
        }
    }
    header["counts"]["record"] = json!(RECORDS);
    std::iter::once(header.to_string())
        .chain(out)
        .collect::<Vec<_>>()
        .join("\n")
}

async fn tenant_records(http: &Http, staff: &str, slug: &str) -> u64 {
    let usage = http
        .get(&format!("/api/v1/tenants/{slug}/usage"), Some(staff))
        .await;
    usage.body["records"].as_u64().expect("records")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_export_and_move_finish_after_the_server_is_killed_mid_job() {
    let mut server = Server::start(tempfile::tempdir().expect("dir"), ENV).await;
    let staff = server.admin().await;
    let http = &server.http;

    // A file of RECORDS records, from a real export of a small tenant.
    http.create_tenant(&staff, "seed", "enterprise").await;
    let (_, token) = http
        .tenant_user(&staff, "seed", "a@seed.example", "admin")
        .await;
    let r = http
        .post(
            "/api/v1/collections/notes/records",
            Some(&token),
            json!({"n": 0}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let job = http
        .post("/api/v1/tenants/seed/export", Some(&staff), json!({}))
        .await;
    let job = http.wait_job(&staff, &job.body["job_id"]).await;
    let file = http
        .get(job["result_url"].as_str().expect("url"), Some(&staff))
        .await;
    let file = grown(&file.text);
    let path = server.dir.path().join("big.ndjson");
    std::fs::write(&path, &file).expect("write");

    // Import, killed midway.
    http.create_tenant(&staff, "big", "enterprise").await;
    let import = server
        .http
        .client
        .post(format!("{}/api/v1/tenants/big/import", server.http.base))
        .bearer_auth(&staff)
        .header("content-type", "application/x-ndjson")
        .body(file)
        .send()
        .await
        .expect("upload");
    let import = Http::read(import).await;
    assert_eq!(import.status, 202, "{}", import.text);
    server.crash_during(&import.body["job_id"]).await;
    let staff = server.admin().await;
    assert_eq!(
        tenant_records(&server.http, &staff, "big").await,
        RECORDS as u64
    );

    // Export, killed midway: the file is whole and holds every record once.
    let export = server
        .http
        .post("/api/v1/tenants/big/export", Some(&staff), json!({}))
        .await;
    let job = server.crash_during(&export.body["job_id"]).await;
    let staff = server.admin().await;
    let file = server
        .http
        .get(job["result_url"].as_str().expect("url"), Some(&staff))
        .await;
    assert_eq!(file.status, 200);
    let ids: std::collections::HashSet<String> = file
        .text
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str::<Value>(l).expect("every line whole"))
        .filter(|i| i["type"] == "record")
        .map(|i| i["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(ids.len(), RECORDS);

    // Move to the other tier, killed midway.
    let shown = server.http.get("/api/v1/tenants/big", Some(&staff)).await;
    let to = if shown.body["isolation"] == "shared" {
        "dedicated"
    } else {
        "shared"
    };
    let moved = server
        .http
        .post(
            "/api/v1/tenants/big/move",
            Some(&staff),
            json!({ "isolation": to }),
        )
        .await;
    assert_eq!(moved.status, 202, "{}", moved.text);
    server.crash_during(&moved.body["job_id"]).await;
    let staff = server.admin().await;
    let shown = server.http.get("/api/v1/tenants/big", Some(&staff)).await;
    assert_eq!(shown.body["isolation"], to, "{}", shown.text);
    assert_eq!(
        tenant_records(&server.http, &staff, "big").await,
        RECORDS as u64
    );
    let verify = server
        .http
        .get("/api/v1/tenants/big/audit/verify", Some(&staff))
        .await;
    assert_eq!(verify.body["valid"], true, "{}", verify.text);
    // And the tenant takes writes where it now lives.
    let login = server
        .http
        .tenant_login("big", "a@seed.example", crate::support::USER_PASSWORD)
        .await;
    let token = login.body["access_token"].as_str().expect("token");
    let r = server
        .http
        .post(
            "/api/v1/collections/notes/records",
            Some(token),
            json!({"n": -1}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

/// SIGKILLs of a server that several tenants (both tiers) are writing to.
const KILLS: usize = 50;

/// 50 times: writers of three tenants write while the server is killed
/// with SIGKILL and started again. Every write it acknowledged (201 with an
/// id) is there after the restart, with the data it was sent; at the end
/// each tenant holds every acknowledged record exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_fifty_kills_under_load() {
    let mut server = Server::start(tempfile::tempdir().expect("dir"), ENV).await;
    let staff = server.admin().await;
    let mut tenants = Vec::new();
    for (slug, isolation) in [
        ("kill-a", "shared"),
        ("kill-b", "shared"),
        ("kill-c", "dedicated"),
    ] {
        server
            .http
            .create_busy_tenant(&staff, slug, isolation)
            .await;
        let (_, token) = server
            .http
            .tenant_user(&staff, slug, &format!("w@{slug}.example"), "admin")
            .await;
        tenants.push((slug, token));
    }
    // Per tenant: acknowledged record id → the `n` it was written with.
    let mut acked: Vec<std::collections::HashMap<String, u64>> = vec![Default::default(); 3];
    let mut n = 0u64;
    for round in 0..KILLS {
        let http = server.http.clone();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let acked_now = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let writers: Vec<_> = (0..6)
            .map(|w| {
                let (http, stop, acked_now) = (http.clone(), stop.clone(), acked_now.clone());
                let (slug, token) = tenants[w % 3].clone();
                let first = n + (w as u64) * 1_000_000;
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    let mut k = first;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let sent = http
                            .client
                            .post(format!("{}/api/v1/collections/notes/records", http.base))
                            .bearer_auth(&token)
                            .json(&json!({"n": k, "tenant": slug}))
                            .send()
                            .await;
                        if let Ok(res) = sent
                            && res.status() == 201
                            && let Ok(body) = res.json::<Value>().await
                            && let Some(id) = body["id"].as_str()
                        {
                            got.push((id.to_owned(), k));
                            acked_now.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        k += 1;
                    }
                    (w % 3, got)
                })
            })
            .collect();
        // Killed while writing: once writes are being acknowledged (a
        // loaded machine may take a while after the restart), a little later.
        let deadline = Instant::now() + Duration::from_secs(20);
        while acked_now.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            assert!(
                Instant::now() < deadline,
                "round {round}: no write acknowledged"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(50 + (round as u64 % 5) * 40)).await;
        server.kill();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut this_round: Vec<Vec<(String, u64)>> = vec![Vec::new(); 3];
        for w in writers {
            let (t, got) = w.await.expect("writer");
            this_round[t].extend(got);
        }
        n += 10_000;
        server.restart().await;
        // The last writes acknowledged before the kill are there after it.
        for (t, (_, token)) in tenants.iter().enumerate() {
            for (id, k) in this_round[t].iter().rev().take(20) {
                let res = server
                    .http
                    .get(
                        &format!("/api/v1/collections/notes/records/{id}"),
                        Some(token),
                    )
                    .await;
                assert_eq!(
                    res.status, 200,
                    "round {round}: acknowledged {id} lost: {}",
                    res.text
                );
                assert_eq!(res.body["data"]["n"], *k);
            }
        }
        for (t, got) in this_round.into_iter().enumerate() {
            acked[t].extend(got);
        }
    }
    // Every acknowledged record, once, in each tenant.
    for (t, (slug, token)) in tenants.iter().enumerate() {
        let mut seen = std::collections::HashMap::<String, u64>::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/api/v1/collections/notes/records?limit=500&cursor={c}"),
                None => "/api/v1/collections/notes/records?limit=500".to_owned(),
            };
            let page = server.http.get(&path, Some(token)).await;
            assert_eq!(page.status, 200, "{}", page.text);
            for item in page.body["items"].as_array().expect("items") {
                let id = item["id"].as_str().expect("id").to_owned();
                assert_eq!(item["data"]["tenant"], *slug, "another tenant's record");
                assert!(
                    seen.insert(id, item["data"]["n"].as_u64().expect("n"))
                        .is_none()
                );
            }
            match page.body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        for (id, k) in &acked[t] {
            assert_eq!(seen.get(id), Some(k), "{slug}: acknowledged {id} missing");
        }
    }
}
