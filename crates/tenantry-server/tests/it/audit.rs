//! The audit log: every mutation leaves an entry (written with the change),
//! entries chain per tenant, the routes read and verify but never edit, and
//! an entry edited in the database is caught.

use crate::support::{ADMIN_PASSWORD, Backend, Res, TestApp, USER_PASSWORD};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::HashSet;

/// Every entry of a listing route, page by page (`limit` per page).
async fn all_entries(app: &TestApp, path: &str, token: &str, limit: u32) -> Vec<Value> {
    let mut entries = Vec::new();
    let mut cursor = String::new();
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let page = app
            .get(
                &format!("{path}{sep}limit={limit}&cursor={cursor}"),
                Some(token),
            )
            .await;
        assert_eq!(page.status, 200, "{}", page.text);
        entries.extend(
            page.body["items"]
                .as_array()
                .expect("items")
                .iter()
                .cloned(),
        );
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => return entries,
        }
    }
}

fn actions(entries: &[Value]) -> Vec<&str> {
    entries
        .iter()
        .map(|e| e["action"].as_str().expect("action"))
        .collect()
}

fn find<'a>(entries: &'a [Value], action: &str) -> &'a Value {
    entries
        .iter()
        .find(|e| e["action"] == action)
        .unwrap_or_else(|| panic!("no {action} entry in {:?}", actions(entries)))
}

#[tokio::test]
async fn every_kind_of_mutation_is_audited_chained_and_readable_by_the_right_people() {
    let app = TestApp::spawn().await;
    let staff = app.admin_token().await;

    // Platform events.
    let plan = json!({"name": "Audited", "limits": {"max_users": 10, "max_storage_bytes": 1000000,
        "api_requests_per_day": null, "requests_per_second": null}, "features": {"custom_branding": true}});
    let res = app
        .call(
            Method::PUT,
            "/api/v1/plans/audited",
            Some(&staff),
            Some(plan),
        )
        .await;
    assert!(res.status.is_success(), "{}", res.text);
    let org = app
        .post(
            "/api/v1/organizations",
            Some(&staff),
            json!({"name": "Org"}),
        )
        .await;
    let org_id = org.body["id"].as_str().expect("org id").to_owned();
    let res = app
        .post(
            &format!("/api/v1/organizations/{org_id}/admins"),
            Some(&staff),
            json!({"email": "oa@audit.example", "password": ADMIN_PASSWORD, "name": "OA"}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);

    // The tenant's lifecycle and settings, by staff.
    let tenant = app.create_tenant(&staff, "aud", "audited").await;
    let tid = tenant["id"].as_str().expect("id").to_owned();
    let ok = |r: Res| assert!(r.status.is_success(), "{} {}", r.status, r.text);
    ok(app
        .call(
            Method::PATCH,
            "/api/v1/tenants/aud",
            Some(&staff),
            Some(json!({"name": "Audited Inc"})),
        )
        .await);
    ok(app
        .post("/api/v1/tenants/aud/suspend", Some(&staff), json!({}))
        .await);
    ok(app
        .post("/api/v1/tenants/aud/activate", Some(&staff), json!({}))
        .await);
    ok(app
        .call(
            Method::PUT,
            "/api/v1/tenants/aud/config/session.timeout",
            Some(&staff),
            Some(json!({"value": 60})),
        )
        .await);
    ok(app
        .call(
            Method::DELETE,
            "/api/v1/tenants/aud/config/session.timeout",
            Some(&staff),
            None,
        )
        .await);
    ok(app
        .call(
            Method::PUT,
            "/api/v1/tenants/aud/branding",
            Some(&staff),
            Some(json!({"color": "#123456"})),
        )
        .await);

    // Identity: users by staff and by the tenant's admin, logins that pass and fail.
    let (admin_user, admin) = app
        .tenant_user(&staff, "aud", "admin@aud.example", "admin")
        .await;
    let admin_id = admin_user["id"].as_str().expect("id").to_owned();
    app.tenant_login("aud", "admin@aud.example", "wrong-password")
        .await
        .assert_problem(401, "unauthorized");
    let u2 = app
        .post(
            "/api/v1/users",
            Some(&admin),
            json!({"email": "u2@aud.example", "password": USER_PASSWORD, "name": "U2"}),
        )
        .await;
    assert_eq!(u2.status, 201, "{}", u2.text);
    let u2_path = format!("/api/v1/users/{}", u2.body["id"].as_str().expect("id"));
    ok(app
        .call(
            Method::PATCH,
            &u2_path,
            Some(&admin),
            Some(json!({"name": "U two"})),
        )
        .await);
    ok(app.call(Method::DELETE, &u2_path, Some(&admin), None).await);

    // Data: a collection and every kind of record change.
    ok(app
        .call(
            Method::PUT,
            "/api/v1/collections/things",
            Some(&admin),
            Some(json!({})),
        )
        .await);
    let created = app
        .call_with(
            Method::POST,
            "/api/v1/collections/things/records",
            Some(&admin),
            &[("x-request-id", "req-audit-create")],
            Some(json!({"n": 1})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let record = format!(
        "/api/v1/collections/things/records/{}",
        created.body["id"].as_str().expect("id")
    );
    ok(app
        .call(Method::PUT, &record, Some(&admin), Some(json!({"n": 2})))
        .await);
    ok(app
        .call(Method::PATCH, &record, Some(&admin), Some(json!({"m": 3})))
        .await);
    ok(app.call(Method::DELETE, &record, Some(&admin), None).await);

    // Cross-tenant: another tenant's user aims at this one and is refused.
    app.create_tenant(&staff, "aud-other", "basic").await;
    let (_, outsider) = app
        .tenant_user(&staff, "aud-other", "x@other.example", "admin")
        .await;
    for _ in 0..3 {
        app.call_with(
            Method::GET,
            "/api/v1/collections",
            Some(&outsider),
            &[("x-tenant-slug", "aud")],
            None,
        )
        .await
        .assert_problem(403, "tenant_mismatch");
    }

    // An org admin naming a tenant outside its organization: a 404 like any
    // unknown tenant, recorded in the platform's chain.
    let oa = app.login("oa@audit.example", ADMIN_PASSWORD).await;
    let oa = oa.body["access_token"].as_str().expect("token").to_owned();
    app.call_with(
        Method::GET,
        "/api/v1/collections",
        Some(&oa),
        &[("x-tenant-slug", "aud")],
        None,
    )
    .await
    .assert_problem(404, "tenant_not_found");

    // Sessions: a refresh token used twice revokes its family; a logout.
    let session = app
        .tenant_login("aud", "admin@aud.example", USER_PASSWORD)
        .await;
    let refresh = json!({"refresh_token": session.body["refresh_token"]});
    for expected in [200, 401] {
        let res = app
            .post("/api/v1/auth/refresh", None, refresh.clone())
            .await;
        assert_eq!(res.status.as_u16(), expected, "{}", res.text);
    }
    let session = app
        .tenant_login("aud", "admin@aud.example", USER_PASSWORD)
        .await;
    let res = app
        .post(
            "/api/v1/auth/logout",
            None,
            json!({"refresh_token": session.body["refresh_token"]}),
        )
        .await;
    assert!(res.status.is_success(), "{}", res.text);

    // Staff see the tenant's whole log; small pages visit each entry once.
    let entries = all_entries(&app, "/api/v1/tenants/aud/audit", &staff, 3).await;
    let ids: HashSet<&str> = entries
        .iter()
        .map(|e| e["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids.len(), entries.len(), "pages overlap");
    let seen = actions(&entries);
    for expected in [
        "tenant.create",
        "tenant.update",
        "tenant.suspend",
        "tenant.activate",
        "config.put",
        "config.delete",
        "tenant.branding",
        "user.create",
        "user.update",
        "user.delete",
        "login.success",
        "login.failure",
        "collection.put",
        "record.create",
        "record.put",
        "record.patch",
        "record.delete",
        "session.reuse_revoked",
        "logout",
    ] {
        assert!(seen.contains(&expected), "{expected} not in {seen:?}");
    }
    assert!(entries.iter().all(|e| e["tenant_id"] == tid.as_str()));
    let create = find(&entries, "record.create");
    assert_eq!(create["request_id"], "req-audit-create");
    assert_eq!(create["actor"], admin_id.as_str());
    assert_eq!(create["actor_scope"], format!("tenant:{tid}"));
    assert_eq!(create["chain"], "data");
    assert_eq!(find(&entries, "tenant.suspend")["actor_scope"], "platform");
    assert_eq!(find(&entries, "tenant.create")["chain"], "control");
    assert!(find(&entries, "tenant.create")["prev_hash"].is_null());
    // The refused attempt is in the prober's own log, naming its target;
    // the target's log does not learn who probed it.
    assert!(
        entries
            .iter()
            .all(|e| e["action"] != "cross_tenant_denied.get")
    );
    let prober = all_entries(&app, "/api/v1/audit", &outsider, 100).await;
    let denied = find(&prober, "cross_tenant_denied.get");
    let repeats = actions(&prober)
        .iter()
        .filter(|a| **a == "cross_tenant_denied.get")
        .count();
    assert_eq!(repeats, 1, "repeats within a minute are recorded once");
    assert!(
        denied["resource"]
            .as_str()
            .is_some_and(|r| r.starts_with(&format!("tenants/{tid}/"))),
        "{denied}"
    );

    // The chains verify, over every entry listed.
    let verify = app
        .get("/api/v1/tenants/aud/audit/verify", Some(&staff))
        .await;
    assert_eq!(verify.status, 200, "{}", verify.text);
    assert_eq!(verify.body["valid"], true);
    assert_eq!(verify.body["entries"], entries.len());
    assert!(verify.body["first_broken"].is_null());

    // Filters.
    let only = all_entries(
        &app,
        "/api/v1/tenants/aud/audit?action=record.create",
        &staff,
        50,
    )
    .await;
    assert_eq!(only.len(), 1);
    let by_admin = all_entries(
        &app,
        &format!("/api/v1/tenants/aud/audit?actor={admin_id}"),
        &staff,
        50,
    )
    .await;
    assert!(by_admin.len() >= 8, "{:?}", actions(&by_admin));
    assert!(by_admin.iter().all(|e| e["actor"] == admin_id.as_str()));
    let since = create["at"].as_str().expect("at");
    let later = all_entries(
        &app,
        &format!(
            "/api/v1/tenants/aud/audit?since={}",
            since.replace('+', "%2B")
        ),
        &staff,
        50,
    )
    .await;
    assert!(later.len() < entries.len() && later.iter().any(|e| e["action"] == "record.create"));
    assert!(
        all_entries(
            &app,
            "/api/v1/tenants/aud/audit?since=2999-01-01T00:00:00Z",
            &staff,
            50
        )
        .await
        .is_empty()
    );
    app.get("/api/v1/tenants/aud/audit?since=yesterday", Some(&staff))
        .await
        .assert_problem(422, "validation_failed");

    // The tenant's admin reads the same log in its own tenant; a plain user may not.
    let own = all_entries(&app, "/api/v1/audit", &admin, 100).await;
    assert!(own.len() >= entries.len());
    let (_, plain) = app
        .tenant_user(&staff, "aud", "plain@aud.example", "user")
        .await;
    app.get("/api/v1/audit", Some(&plain))
        .await
        .assert_problem(403, "forbidden");
    // Another tenant's log holds none of it; its admin cannot read this one.
    let other = all_entries(&app, "/api/v1/audit", &outsider, 100).await;
    assert!(!other.is_empty());
    assert!(other.iter().all(|e| e["tenant_id"] != tid.as_str()));
    app.get("/api/v1/tenants/aud/audit", Some(&outsider))
        .await
        .assert_problem(404, "tenant_not_found");

    // Platform events, for super-admins only.
    let platform = all_entries(&app, "/api/v1/platform/audit", &staff, 100).await;
    let seen = actions(&platform);
    for expected in [
        "plan.put",
        "organization.create",
        "platform_user.create",
        "login.success",
    ] {
        assert!(seen.contains(&expected), "{expected} not in {seen:?}");
    }
    assert!(platform.iter().all(|e| e["tenant_id"].is_null()));
    let probe = find(&platform, "cross_tenant_denied.get");
    assert_eq!(probe["actor_scope"], format!("organization:{org_id}"));
    app.get("/api/v1/platform/audit", Some(&admin))
        .await
        .assert_problem(403, "forbidden");

    // No route edits or deletes an entry.
    let id = create["id"].as_str().expect("id");
    for method in [Method::PUT, Method::PATCH, Method::DELETE] {
        for path in [
            format!("/api/v1/tenants/aud/audit/{id}"),
            "/api/v1/tenants/aud/audit".to_owned(),
            "/api/v1/audit".to_owned(),
        ] {
            let res = app.call(method.clone(), &path, Some(&staff), None).await;
            assert!(
                res.status == 404 || res.status == 405,
                "{method} {path}: {}",
                res.status
            );
        }
    }
}

/// Edits one audit row behind the server's back, as an intruder with
/// database access would: `chain` is `control` or `data`.
async fn forge(app: &TestApp, tenant_id: &str, dedicated: bool, chain: &str, entry: &str) {
    let statement = "UPDATE audit_log SET action = 'forged' WHERE id = ";
    match crate::BACKEND {
        Backend::Sqlite => {
            use sqlx::Connection;
            let dir = app.dir.path();
            let file = match (chain, dedicated) {
                ("control", _) => dir.join("control.db"),
                (_, false) => dir.join("shared.db"),
                (_, true) => dir.join("tenants").join(format!("{tenant_id}.db")),
            };
            let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", file.display()))
                .await
                .expect("open");
            // The application cannot update an entry; an intruder with the
            // file can, once the trigger is out of the way.
            let guarded: Option<i64> = sqlx::query_scalar(
                "SELECT 1 FROM sqlite_master WHERE name = 'audit_log_append_only_update'",
            )
            .fetch_optional(&mut conn)
            .await
            .expect("sqlite_master");
            if guarded.is_some() {
                let refused = sqlx::query(&format!("{statement} ?"))
                    .bind(entry)
                    .execute(&mut conn)
                    .await;
                assert!(
                    refused.is_err(),
                    "the append-only trigger let an update through"
                );
                sqlx::query("DROP TRIGGER audit_log_append_only_update")
                    .execute(&mut conn)
                    .await
                    .expect("drop trigger");
            }
            let done = sqlx::query(&format!("{statement} ?"))
                .bind(entry)
                .execute(&mut conn)
                .await
                .expect("forge");
            assert_eq!(done.rows_affected(), 1);
        }
        Backend::Postgres => {
            use sqlx::Connection;
            let mut conn = app.pg_owner().await;
            let mut conn = match (chain, dedicated) {
                ("data", true) => {
                    let name: String = sqlx::query_scalar(
                        "SELECT datname::text FROM pg_database WHERE datname LIKE '%\\_' || $1",
                    )
                    .bind(tenant_id.replace('-', ""))
                    .fetch_one(&mut conn)
                    .await
                    .expect("tenant database");
                    let url = format!("{}/{name}", crate::pg::server_url().await);
                    sqlx::PgConnection::connect(&url).await.expect("connect")
                }
                _ => conn,
            };
            let schema = if chain == "control" {
                "public"
            } else {
                "tenant_data"
            };
            let sql = statement.replace("audit_log", &format!("{schema}.audit_log"));
            let done = sqlx::query(&format!("{sql} $1::uuid"))
                .bind(entry)
                .execute(&mut conn)
                .await
                .expect("forge");
            assert_eq!(done.rows_affected(), 1);
        }
    }
}

#[tokio::test]
async fn an_entry_edited_in_the_database_is_caught_by_verify_on_both_tiers() {
    let app = TestApp::spawn().await;
    let staff = app.admin_token().await;
    for (slug, plan, dedicated) in [("forge-s", "basic", false), ("forge-d", "enterprise", true)] {
        let tenant = app.create_tenant(&staff, slug, plan).await;
        let tid = tenant["id"].as_str().expect("id");
        assert_eq!(
            tenant["isolation"],
            if dedicated { "dedicated" } else { "shared" }
        );
        let (_, admin) = app
            .tenant_user(&staff, slug, &format!("a@{slug}.example"), "admin")
            .await;
        for n in 0..3 {
            let res = app
                .post(
                    "/api/v1/collections/notes/records",
                    Some(&admin),
                    json!({"n": n}),
                )
                .await;
            assert_eq!(res.status, 201, "{}", res.text);
        }
        let verify_path = format!("/api/v1/tenants/{slug}/audit/verify");
        let intact = app.get(&verify_path, Some(&staff)).await;
        assert_eq!(intact.body["valid"], true, "{}", intact.text);

        // A record change is rewritten in the data chain: caught at that entry.
        let log = all_entries(
            &app,
            &format!("/api/v1/tenants/{slug}/audit?action=record.create"),
            &staff,
            50,
        )
        .await;
        let victim = log[1]["id"].as_str().expect("id");
        forge(&app, tid, dedicated, "data", victim).await;
        let broken = app.get(&verify_path, Some(&staff)).await;
        assert_eq!(broken.body["valid"], false, "{}", broken.text);
        assert_eq!(broken.body["first_broken"], victim);
        assert_eq!(broken.body["entries"], intact.body["entries"]);

        // So is an edit in the control chain (the user's creation).
        let users = all_entries(
            &app,
            &format!("/api/v1/tenants/{slug}/audit?action=user.create"),
            &staff,
            50,
        )
        .await;
        let victim = users[0]["id"].as_str().expect("id");
        forge(&app, tid, dedicated, "control", victim).await;
        let broken = app.get(&verify_path, Some(&staff)).await;
        assert_eq!(broken.body["valid"], false);
        let chains = broken.body["chains"].as_array().expect("chains");
        let control = chains
            .iter()
            .find(|c| c["chain"] == "control")
            .expect("control chain");
        assert_eq!(control["first_broken"], victim);
    }
}
