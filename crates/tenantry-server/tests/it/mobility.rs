//! Tenant mobility, on both engines: jobs and who sees them, export and
//! import (round trip, foreign data, refused files), online moves under
//! write load, and deletion under write load.

use crate::support::{Res, TestApp, USER_PASSWORD};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// A tenant with an admin, config (plain and encrypted), branding, a
/// collection with unique and indexed fields, records (one patched twice)
/// and a second user; returns (tenant JSON, admin token).
async fn seeded(app: &TestApp, staff: &str, slug: &str, isolation: &str) -> (Value, String) {
    let t = app
        .post(
            "/api/v1/tenants",
            Some(staff),
            json!({"name": format!("Tenant {slug}"), "slug": slug, "plan": "premium",
                   "isolation": isolation, "metadata": {"district": slug},
                   "branding": {"color": "#123456"}}),
        )
        .await;
    assert_eq!(t.status, 201, "{}", t.text);
    let (_, token) = app
        .tenant_user(staff, slug, &format!("admin@{slug}.example"), "admin")
        .await;
    app.tenant_user(staff, slug, &format!("clerk@{slug}.example"), "user")
        .await;
    for (key, value, encrypted) in [
        ("session.timeout", json!(900), false),
        ("sms.api_key", json!(format!("secret-of-{slug}")), true),
    ] {
        let res = app
            .call(
                Method::PUT,
                &format!("/api/v1/tenants/{slug}/config/{key}"),
                Some(staff),
                Some(json!({"value": value, "encrypted": encrypted})),
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.text);
    }
    let def = app
        .call(
            Method::PUT,
            "/api/v1/collections/complaints",
            Some(&token),
            Some(json!({"unique": ["ref"], "indexed": ["ward"]})),
        )
        .await;
    assert_eq!(def.status, 201, "{}", def.text);
    let mut first = String::new();
    for i in 0..12 {
        let r = app
            .post(
                "/api/v1/collections/complaints/records",
                Some(&token),
                json!({"ref": format!("{slug}-{i}"), "ward": i % 3, "title": format!("note of {slug} ñ {i}")}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        if i == 0 {
            first = r.body["id"].as_str().expect("id").to_owned();
        }
    }
    for status in ["open", "resolved"] {
        let r = app
            .call(
                Method::PATCH,
                &format!("/api/v1/collections/complaints/records/{first}"),
                Some(&token),
                Some(json!({"status": status})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    (t.body, token)
}

/// Starts an export and returns its finished job and the downloaded file.
async fn export(app: &TestApp, staff: &str, slug: &str, format: &str) -> (Value, String) {
    let started = app
        .post(
            &format!("/api/v1/tenants/{slug}/export"),
            Some(staff),
            json!({"format": format}),
        )
        .await;
    assert_eq!(started.status, 202, "{}", started.text);
    let job = app.wait_job(staff, &started.body["job_id"]).await;
    let url = job["result_url"].as_str().expect("result_url");
    assert!(url.starts_with("/api/v1/jobs/"), "a relative path: {url}");
    let file = app.get(url, Some(staff)).await;
    assert_eq!(file.status, 200, "{}", file.text);
    (job, file.text)
}

/// The header and the items of an export, in either format.
fn parse(text: &str) -> (Value, Vec<Value>) {
    if text.starts_with("{\"header\"") {
        let doc: Value = serde_json::from_str(text).expect("one JSON document");
        let items = doc["items"].as_array().expect("items").clone();
        return (doc["header"].clone(), items);
    }
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = serde_json::from_str(lines.next().expect("header")).expect("header JSON");
    let items = lines
        .map(|l| serde_json::from_str(l).expect("item JSON"))
        .collect();
    (header, items)
}

/// Uploads `body` as tenant `slug`'s import and returns the finished job.
async fn import(app: &TestApp, staff: &str, slug: &str, body: String) -> Value {
    let res = app
        .client
        .post(format!("{}/api/v1/tenants/{slug}/import", app.base))
        .bearer_auth(staff)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .expect("send");
    let res = TestApp::read(res).await;
    assert_eq!(res.status, 202, "{}", res.text);
    app.wait_job_end(staff, &res.body["job_id"]).await
}

/// An export's items with what an import regenerates taken out: the
/// tenant's own id and routing (slug, plan, tier, domain, times), the
/// sealed form of encrypted values (sealed anew for the target), and the
/// audit entries' ids, seqs and hashes; the entries' content stays.
fn comparable(items: &[Value]) -> BTreeMap<String, Vec<Value>> {
    let mut by_type: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for item in items {
        let mut item = item.clone();
        let object = item.as_object_mut().expect("object");
        object.remove("tenant_id");
        let kind = object["type"].as_str().expect("type").to_owned();
        let drop: &[&str] = match kind.as_str() {
            "tenant" => &[
                "slug",
                "plan",
                "isolation",
                "organization_id",
                "domain",
                "created_at",
                "updated_at",
            ],
            "key" => &["wrapped_key"],
            "config" if object["encrypted"] == true => &["value"],
            "audit" => &["seq", "id", "prev_hash", "hash"],
            _ => &[],
        };
        for field in drop {
            object.remove(*field);
        }
        by_type.entry(kind).or_default().push(item);
    }
    by_type
}

#[tokio::test]
async fn export_then_import_then_export_gives_the_same_content_on_both_tiers_and_formats() {
    let app = TestApp::spawn().await;
    let staff = app.admin_token().await;
    for (tier, format) in [("shared", "ndjson"), ("dedicated", "json")] {
        let src = format!("src-{tier}");
        let dst = format!("dst-{tier}");
        seeded(&app, &staff, &src, tier).await;
        let (job, file) = export(&app, &staff, &src, format).await;
        let (header, items) = parse(&file);
        assert_eq!(header["format"], "tenantry-export");
        assert_eq!(header["version"], 1);
        assert_eq!(header["counts"]["record"], 12);
        assert_eq!(header["counts"]["user"], 2);
        let user = items.iter().find(|i| i["type"] == "user").expect("a user");
        assert!(
            user["password_hash"]
                .as_str()
                .is_some_and(|h| h.starts_with("$argon2id$")),
            "hashes, never passwords: {user}"
        );
        assert!(!file.contains(USER_PASSWORD), "no plaintext password");
        assert!(
            !file.contains(&format!("secret-of-{src}")),
            "encrypted values stay encrypted"
        );
        let patched = items
            .iter()
            .find(|i| i["type"] == "record" && i["data"]["status"] == "resolved")
            .expect("the patched record");
        assert_eq!(patched["version"], 3);

        // Into a new, empty tenant (another tier than the source's, even).
        let other = if tier == "shared" {
            "dedicated"
        } else {
            "shared"
        };
        app.post(
            "/api/v1/tenants",
            Some(&staff),
            json!({"name": "Target", "slug": dst, "plan": "premium", "isolation": other}),
        )
        .await;
        let done = import(&app, &staff, &dst, file.clone()).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        let (_, again) = export(&app, &staff, &dst, format).await;
        let (header2, items2) = parse(&again);
        let (mut a, mut b) = (comparable(&items), comparable(&items2));
        // The target's own chain holds the source's entries, in order,
        // among its own (its creation, the import).
        let (audit_a, audit_b) = (
            a.remove("audit").unwrap_or_default(),
            b.remove("audit").unwrap_or_default(),
        );
        let mut rest = audit_b.iter();
        for entry in &audit_a {
            assert!(
                rest.any(|e| e == entry),
                "{entry} missing from the imported chain"
            );
        }
        assert_eq!(a, b, "everything but the audit chain comes back as it was");
        assert_eq!(header2["counts"]["record"], header["counts"]["record"]);

        // The restored tenant works: its users log in, its secrets open,
        // its unique fields still bind, and the audit chain verifies.
        let login = app
            .tenant_login(&dst, &format!("clerk@{src}.example"), USER_PASSWORD)
            .await;
        assert_eq!(login.status, 200, "{}", login.text);
        let clerk = login.body["access_token"]
            .as_str()
            .expect("token")
            .to_owned();
        let secret = app
            .get(
                &format!("/api/v1/tenants/{dst}/config/sms.api_key?reveal=true"),
                Some(&staff),
            )
            .await;
        assert_eq!(
            secret.body["value"],
            format!("secret-of-{src}"),
            "{}",
            secret.text
        );
        app.post(
            "/api/v1/collections/complaints/records",
            Some(&clerk),
            json!({"ref": format!("{src}-3")}),
        )
        .await
        .assert_problem(409, "conflict");
        let usage = app
            .get(&format!("/api/v1/tenants/{dst}/usage"), Some(&staff))
            .await;
        assert_eq!(usage.body["records"], 12);
        let verify = app
            .get(&format!("/api/v1/tenants/{dst}/audit/verify"), Some(&staff))
            .await;
        assert_eq!(verify.body["valid"], true, "{}", verify.text);
        // The job carries its tenant; it is this tenant admin's to see.
        let admin = app
            .tenant_login(&dst, &format!("admin@{src}.example"), USER_PASSWORD)
            .await;
        let admin = admin.body["access_token"]
            .as_str()
            .expect("token")
            .to_owned();
        let own = app
            .get(
                &format!("/api/v1/jobs/{}", done["id"].as_str().expect("id")),
                Some(&admin),
            )
            .await;
        assert_eq!(own.status, 200, "{}", own.text);
        let theirs = app
            .get(
                &format!("/api/v1/jobs/{}", job["id"].as_str().expect("id")),
                Some(&admin),
            )
            .await;
        theirs.assert_problem(404, "not_found");
    }
}

#[tokio::test]
async fn an_export_holds_nothing_of_another_tenant() {
    let app = TestApp::spawn().await;
    let staff = app.admin_token().await;
    let (a, _) = seeded(&app, &staff, "alpha", "shared").await;
    let (b, _) = seeded(&app, &staff, "bravo", "shared").await;
    let (c, _) = seeded(&app, &staff, "charlie", "dedicated").await;
    let (_, file) = export(&app, &staff, "alpha", "ndjson").await;
    let (header, items) = parse(&file);
    assert_eq!(header["tenant_id"], a["id"]);
    assert!(
        items.iter().all(|i| i["tenant_id"] == a["id"]),
        "every item is alpha's"
    );
    for other in [&b, &c] {
        assert!(
            !file.contains(other["id"].as_str().expect("id")),
            "no other tenant's id"
        );
    }
    for word in ["bravo", "charlie"] {
        assert!(!file.contains(word), "no other tenant's data ({word})");
    }
}

#[tokio::test]
async fn bad_import_files_fail_the_job_naming_the_line_and_leave_the_target_as_it_was() {
    let app = TestApp::spawn_with(tempfile::tempdir().expect("dir"), |s| {
        s.import_max_bytes = 200_000;
    })
    .await;
    let staff = app.admin_token().await;
    let (src, _) = seeded(&app, &staff, "origin", "shared").await;
    let (_, file) = export(&app, &staff, "origin", "ndjson").await;
    let lines: Vec<&str> = file.lines().collect();
    let foreign = lines[5].replace(
        src["id"].as_str().expect("id"),
        &uuid::Uuid::now_v7().to_string(),
    );
    let with_line = |n: usize, text: &str| {
        let mut l = lines.clone();
        l[n] = text;
        l.join("\n")
    };
    let cases = [
        (with_line(4, "{not json"), "line 5"),
        (
            file.replacen("\"version\":1", "\"version\":9", 1),
            "unknown format version 9",
        ),
        (with_line(5, &foreign), "line 6"),
        (lines[..lines.len() - 1].join("\n"), "header counts"),
    ];
    for (i, (body, expected)) in cases.into_iter().enumerate() {
        let slug = format!("target-{i}");
        app.post(
            "/api/v1/tenants",
            Some(&staff),
            json!({"name": "T", "slug": slug, "plan": "premium", "isolation": "shared"}),
        )
        .await;
        let job = import(&app, &staff, &slug, body).await;
        assert_eq!(job["status"], "failed", "{job}");
        let error = job["error"].as_str().expect("error");
        assert!(error.contains(expected), "{expected:?} in {error:?}");
        // Exactly as before: no users, config or data, and writes work (no seal left).
        let users = app
            .call_with(
                Method::GET,
                "/api/v1/users",
                Some(&staff),
                &[("x-tenant-slug", &slug)],
                None,
            )
            .await;
        assert_eq!(users.body["items"], json!([]), "{}", users.text);
        let config = app
            .get(&format!("/api/v1/tenants/{slug}/config"), Some(&staff))
            .await;
        assert_eq!(config.body, json!({}));
        let usage = app
            .get(&format!("/api/v1/tenants/{slug}/usage"), Some(&staff))
            .await;
        assert_eq!(usage.body["records"], 0);
        let write = app
            .call_with(
                Method::POST,
                "/api/v1/collections/x/records",
                Some(&staff),
                &[("x-tenant-slug", &slug)],
                Some(json!({"ok": true})),
            )
            .await;
        assert_eq!(write.status, 201, "{}", write.text);
    }
    // A tenant that holds data already is no import target.
    let job = import(&app, &staff, "target-0", file.clone()).await;
    assert_eq!(job["status"], "failed");
    assert!(
        job["error"]
            .as_str()
            .is_some_and(|e| e.contains("not empty")),
        "{job}"
    );
    // Past the configured limit: refused at the door (the upload) ...
    let big = format!("{file}{}", " ".repeat(200_001));
    let res = app
        .client
        .post(format!("{}/api/v1/tenants/target-1/import", app.base))
        .bearer_auth(&staff)
        .body(big.clone())
        .send()
        .await
        .expect("send");
    TestApp::read(res)
        .await
        .assert_problem(413, "payload_too_large");
    // ... and by the job itself for a file handed over otherwise (the CLI).
    let path = app.dir.path().join("big.ndjson");
    std::fs::write(&path, big).expect("write");
    let services = &app.app_state.services;
    let target = services
        .core
        .find_tenant("target-2")
        .await
        .expect("store")
        .expect("tenant");
    let queued = services
        .tenants
        .start_import(
            &tenantry_server::control::console_operator(),
            &target,
            path,
            false,
        )
        .await
        .expect("queued");
    let job = app.wait_job_end(&staff, &json!(queued.id)).await;
    assert!(
        job["error"]
            .as_str()
            .is_some_and(|e| e.contains("over the limit")),
        "{job}"
    );
}

#[tokio::test]
async fn jobs_are_seen_by_staff_over_the_tenant_and_its_own_admins_only() {
    let app = TestApp::spawn().await;
    let staff = app.admin_token().await;
    let org = |name: &str| {
        let app = &app;
        let staff = staff.clone();
        let name = name.to_owned();
        async move {
            let o = app
                .post("/api/v1/organizations", Some(&staff), json!({"name": name}))
                .await;
            let id = o.body["id"].as_str().expect("org").to_owned();
            let email = format!("boss@{name}.example");
            app.post(
                &format!("/api/v1/organizations/{id}/admins"),
                Some(&staff),
                json!({"email": email, "password": USER_PASSWORD, "name": "Boss"}),
            )
            .await;
            let login = app.login(&email, USER_PASSWORD).await;
            (
                id,
                login.body["access_token"]
                    .as_str()
                    .expect("token")
                    .to_owned(),
            )
        }
    };
    let (org_a, boss_a) = org("north").await;
    let (_, boss_b) = org("south").await;
    let t = app
        .post(
            "/api/v1/tenants",
            Some(&boss_a),
            json!({"name": "N", "slug": "north-1", "plan": "basic", "organization_id": org_a}),
        )
        .await;
    assert_eq!(t.status, 201, "{}", t.text);
    let (_, admin) = app
        .tenant_user(&staff, "north-1", "a@north.example", "admin")
        .await;
    let (_, user) = app
        .tenant_user(&staff, "north-1", "u@north.example", "user")
        .await;
    let started = app
        .post("/api/v1/tenants/north-1/export", Some(&boss_a), json!({}))
        .await;
    assert_eq!(started.status, 202, "{}", started.text);
    assert!(started.headers.get("location").is_some());
    let id = started.body["job_id"].as_str().expect("job").to_owned();
    let path = format!("/api/v1/jobs/{id}");
    app.wait_job(&staff, &json!(id)).await;
    for (token, status) in [
        (&staff, 200),
        (&boss_a, 200),
        (&admin, 200),
        (&boss_b, 404),
        (&user, 404),
    ] {
        assert_eq!(app.get(&path, Some(token)).await.status.as_u16(), status);
        let download = app.get(&format!("{path}/result"), Some(token)).await;
        assert_eq!(download.status.as_u16(), status, "{}", download.text);
    }
    let listed = app
        .get(
            "/api/v1/jobs?tenant=north-1&status=succeeded",
            Some(&boss_a),
        )
        .await;
    assert_eq!(
        listed.body["items"].as_array().map(Vec::len),
        Some(1),
        "{}",
        listed.text
    );
    assert_eq!(listed.body["items"][0]["id"], id.as_str());
    let none = app.get("/api/v1/jobs?tenant=north-1", Some(&boss_b)).await;
    assert_eq!(none.body["items"], json!([]));
    app.get("/api/v1/jobs?status=nonsense", Some(&staff))
        .await
        .assert_problem(422, "validation_failed");
    app.get("/api/v1/jobs/not-a-job", Some(&staff))
        .await
        .assert_problem(404, "not_found");
    // A move must go somewhere it is not, and to a configured server.
    app.post(
        "/api/v1/tenants/north-1/move",
        Some(&staff),
        json!({"isolation": "shared"}),
    )
    .await
    .assert_problem(422, "validation_failed");
    app.post(
        "/api/v1/tenants/north-1/move",
        Some(&staff),
        json!({"server": "nowhere"}),
    )
    .await
    .assert_problem(422, "validation_failed");
}

#[tokio::test]
async fn one_unfinished_job_per_tenant_and_a_deletion_cancels_what_has_not_started() {
    // No workers: jobs stay queued until this test runs them, as the CLI does.
    let app = TestApp::spawn_with(tempfile::tempdir().expect("dir"), |s| s.job_workers = 0).await;
    let staff = app.admin_token().await;
    app.create_tenant(&staff, "busy", "basic").await;
    let export = app
        .post("/api/v1/tenants/busy/export", Some(&staff), json!({}))
        .await;
    assert_eq!(export.status, 202, "{}", export.text);
    app.post(
        "/api/v1/tenants/busy/move",
        Some(&staff),
        json!({"isolation": "dedicated"}),
    )
    .await
    .assert_problem(409, "conflict");
    // A deletion takes precedence over a job that has not started.
    let deleted = app
        .call(Method::DELETE, "/api/v1/tenants/busy", Some(&staff), None)
        .await;
    assert_eq!(deleted.status, 204, "{}", deleted.text);
    let cancelled = app
        .get(
            &format!(
                "/api/v1/jobs/{}",
                export.body["job_id"].as_str().expect("id")
            ),
            Some(&staff),
        )
        .await;
    assert_eq!(cancelled.body["status"], "failed");
    assert!(
        cancelled.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("deleted")),
        "{}",
        cancelled.text
    );
    // Deleting at once: unknown to everyone, purge still queued.
    app.get("/api/v1/tenants/busy", Some(&staff))
        .await
        .assert_problem(404, "tenant_not_found");
    let listed = app
        .get("/api/v1/tenants?status=deleting", Some(&staff))
        .await;
    assert_eq!(listed.body["items"][0]["slug"], "busy", "{}", listed.text);
    let purge: tenantry::JobId = deleted.headers["job-id"]
        .to_str()
        .expect("id")
        .parse()
        .expect("job id");
    let job = tenantry_server::jobs::run_to_end(&app.app_state.services, purge, |_| {})
        .await
        .expect("purged");
    assert_eq!(
        job.status,
        tenantry::job::JobStatus::Succeeded,
        "{:?}",
        job.error
    );
    let listed = app
        .get("/api/v1/tenants?status=deleted", Some(&staff))
        .await;
    assert_eq!(listed.body["items"][0]["slug"], "busy", "{}", listed.text);
}

/// Records by id with their version and data, read through the API.
async fn all_records(app: &TestApp, token: &str, collection: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = app
            .get(
                &format!("/api/v1/collections/{collection}/records?limit=500&cursor={cursor}"),
                Some(token),
            )
            .await;
        assert_eq!(page.status, 200, "{}", page.text);
        out.extend(
            page.body["items"]
                .as_array()
                .expect("items")
                .iter()
                .cloned(),
        );
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => return out,
        }
    }
}

/// Four writers (creates, then patches of what they created) writing from
/// before the move starts until after it has ended: every write must be
/// acknowledged (a move delays writes, it never refuses them), the move
/// must end although the writes never pause (its copy must not chase
/// them), and afterwards every acknowledged record is there exactly once
/// with its last version.
/// `label` names the round's collection; `target` is the move's body.
pub async fn move_under_load(
    app: &TestApp,
    staff: &str,
    token: &str,
    slug: &str,
    label: &str,
    target: Value,
) {
    let collection = format!("load_{label}");
    let acknowledged: Arc<Mutex<HashMap<String, (i64, Value)>>> = Default::default();
    let start = Arc::new(tokio::sync::Barrier::new(5));
    let moved_away = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (client, base, token) = (app.client.clone(), app.base.clone(), token.to_owned());
            let (acknowledged, start, collection) =
                (acknowledged.clone(), start.clone(), collection.clone());
            let moved_away = moved_away.clone();
            tokio::spawn(async move {
                start.wait().await;
                let mut mine: Vec<String> = Vec::new();
                // At least 200 each; on until the move has ended (bounded,
                // so a move that never ends fails the test instead of hanging).
                for i in 0..20_000 {
                    if i >= 200 && moved_away.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let res = if i % 2 == 0 || mine.is_empty() {
                        client
                            .post(format!("{base}/api/v1/collections/{collection}/records"))
                            .bearer_auth(&token)
                            .json(&json!({"writer": w, "n": i}))
                            .send()
                            .await
                    } else {
                        let id = &mine[i % mine.len()];
                        client
                            .patch(format!(
                                "{base}/api/v1/collections/{collection}/records/{id}"
                            ))
                            .bearer_auth(&token)
                            .json(&json!({"n": i}))
                            .send()
                            .await
                    };
                    let res = TestApp::read(res.expect("send")).await;
                    assert!(
                        res.status.is_success(),
                        "write {i} of writer {w}: {}",
                        res.text
                    );
                    let id = res.body["id"].as_str().expect("id").to_owned();
                    if res.status == 201 {
                        mine.push(id.clone());
                    }
                    let version = res.body["version"].as_i64().expect("version");
                    acknowledged
                        .lock()
                        .expect("lock")
                        .insert(id, (version, res.body["data"].clone()));
                }
            })
        })
        .collect();
    start.wait().await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let moved = app
        .post(
            &format!("/api/v1/tenants/{slug}/move"),
            Some(staff),
            target.clone(),
        )
        .await;
    assert_eq!(moved.status, 202, "{}", moved.text);
    app.wait_job(staff, &moved.body["job_id"]).await;
    moved_away.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    let tenant = app
        .get(&format!("/api/v1/tenants/{slug}"), Some(staff))
        .await;
    for (field, wanted) in target.as_object().expect("move body") {
        let shown = if field == "server" {
            "placement"
        } else {
            field
        };
        assert_eq!(&tenant.body[shown], wanted, "{}", tenant.text);
    }
    let stored = all_records(app, token, &collection).await;
    let acknowledged = acknowledged.lock().expect("lock").clone();
    let distinct: std::collections::HashSet<&str> = stored
        .iter()
        .map(|r| r["id"].as_str().expect("id"))
        .collect();
    assert_eq!(distinct.len(), stored.len(), "no record twice");
    assert_eq!(
        stored.len(),
        acknowledged.len(),
        "every acknowledged record"
    );
    for r in &stored {
        let (version, data) = &acknowledged[r["id"].as_str().expect("id")];
        assert_eq!(
            (&r["version"].as_i64().expect("v"), &r["data"]),
            (version, data),
            "last version kept"
        );
    }
    let usage = app
        .get(&format!("/api/v1/tenants/{slug}/usage"), Some(staff))
        .await;
    assert!(
        usage.body["records"].as_u64() >= Some(stored.len() as u64),
        "{}",
        usage.text
    );
    let verify = app
        .get(&format!("/api/v1/tenants/{slug}/audit/verify"), Some(staff))
        .await;
    assert_eq!(verify.body["valid"], true, "{}", verify.text);
}

#[tokio::test]
async fn a_move_under_concurrent_writes_loses_no_acknowledged_write_either_way() {
    let app = TestApp::spawn().await;
    let staff = app.admin_token().await;
    let t = app.create_busy_tenant(&staff, "loaded", "shared").await;
    let id = t["id"].as_str().expect("id").to_owned();
    let (_, token) = app
        .tenant_user(&staff, "loaded", "w@loaded.example", "admin")
        .await;
    for to in ["dedicated", "shared"] {
        let body = json!({ "isolation": to });
        move_under_load(&app, &staff, &token, "loaded", to, body).await;
        // Back on shared, the dedicated copy is dropped.
        assert_eq!(app.dedicated_storage_exists(&id).await, to == "dedicated");
    }
}

#[tokio::test]
async fn a_deletion_under_concurrent_writes_leaves_no_row_of_the_tenant() {
    let app = TestApp::spawn().await;
    let staff = app.admin_token().await;
    for tier in ["shared", "dedicated"] {
        let slug = format!("doomed-{tier}");
        let (t, token) = seeded(&app, &staff, &slug, tier).await;
        let id = t["id"].as_str().expect("id").to_owned();
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let (client, base, token) = (app.client.clone(), app.base.clone(), token.clone());
                tokio::spawn(async move {
                    let mut after_delete = Vec::new();
                    for i in 0..200 {
                        let res = client
                            .post(format!("{base}/api/v1/collections/complaints/records"))
                            .bearer_auth(&token)
                            .json(&json!({"w": w, "i": i}))
                            .send()
                            .await
                            .expect("send");
                        let res: Res = TestApp::read(res).await;
                        after_delete.push(res.status.as_u16());
                    }
                    after_delete
                })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let deleted = app
            .call(
                Method::DELETE,
                &format!("/api/v1/tenants/{slug}"),
                Some(&staff),
                None,
            )
            .await;
        assert_eq!(deleted.status, 204, "{}", deleted.text);
        for w in writers {
            let statuses = w.await.expect("writer");
            // Before the deletion: created; after it: the tenant is unknown.
            let first_refusal = statuses
                .iter()
                .position(|s| *s != 201)
                .unwrap_or(statuses.len());
            assert!(
                statuses[first_refusal..]
                    .iter()
                    .all(|s| *s == 401 || *s == 404),
                "{statuses:?}"
            );
        }
        app.get(&format!("/api/v1/tenants/{slug}"), Some(&staff))
            .await
            .assert_problem(404, "tenant_not_found");
        // Nothing of it is left but its audit chains (append-only, kept by
        // design) and the platform's record of the jobs that ran on it.
        let left: Vec<_> = app
            .tenant_rows(&id)
            .await
            .into_iter()
            .filter(|(table, _)| !table.ends_with("audit_log") && !table.ends_with("jobs"))
            .collect();
        assert_eq!(left, Vec::<(String, i64)>::new(), "tier {tier}");
        let listed = app
            .get(
                &format!("/api/v1/tenants?status=deleted&q={slug}"),
                Some(&staff),
            )
            .await;
        assert_eq!(
            listed.body["items"][0]["status"], "deleted",
            "{}",
            listed.text
        );
        // Its slug is free again.
        let again = app
            .post(
                "/api/v1/tenants",
                Some(&staff),
                json!({"name": "again", "slug": slug, "plan": "basic"}),
            )
            .await;
        assert_eq!(again.status, 201, "{}", again.text);
    }
}
