//! Races and escalations found in review, each pinned by a test.

use crate::support::{TestApp, USER_PASSWORD};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn tenant_admins_cannot_switch_on_features_their_plan_lacks() {
    let app = TestApp::spawn().await;
    let staff = app.admin_token().await;
    app.create_tenant(&staff, "cheap", "basic").await;
    let (_, admin) = app
        .tenant_user(&staff, "cheap", "a@cheap.example", "admin")
        .await;
    let grant = json!({"value": {"custom_branding": true, "ai_verification": true}});
    app.call(
        Method::PUT,
        "/api/v1/tenants/cheap/config/features",
        Some(&admin),
        Some(grant.clone()),
    )
    .await
    .assert_problem(403, "forbidden");
    // Other keys stay theirs to set.
    let res = app
        .call(
            Method::PUT,
            "/api/v1/tenants/cheap/config/session.timeout",
            Some(&admin),
            Some(json!({"value": 600})),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let features = app
        .get("/api/v1/tenants/cheap/features", Some(&admin))
        .await;
    assert_eq!(features.body["custom_branding"], false);
    // Platform staff may grant them.
    assert_eq!(
        app.call(
            Method::PUT,
            "/api/v1/tenants/cheap/config/features",
            Some(&staff),
            Some(grant)
        )
        .await
        .status,
        200
    );
}

#[tokio::test]
async fn repeated_indicators_must_agree_and_platform_hosts_name_no_tenant() {
    let app = TestApp::spawn_with(tempfile::tempdir().expect("dir"), |s| {
        s.base_domain = Some("tenants.test".into())
    })
    .await;
    let staff = app.admin_token().await;
    let a = app.create_tenant(&staff, "one", "basic").await;
    app.create_tenant(&staff, "two", "basic").await;
    let res = app
        .call_with(
            Method::GET,
            "/api/v1/users",
            Some(&staff),
            &[("x-tenant-slug", "one"), ("x-tenant-slug", "two")],
            None,
        )
        .await;
    res.assert_problem(403, "tenant_mismatch");
    app.get("/api/v1/users?tenant=one&tenant=two", Some(&staff))
        .await
        .assert_problem(403, "tenant_mismatch");
    // api.<base> is the platform's host, not a tenant's.
    let res = app
        .call_with(
            Method::GET,
            "/api/v1/users",
            Some(&staff),
            &[
                ("host", "api.tenants.test"),
                ("x-tenant-id", a["id"].as_str().expect("id")),
            ],
            None,
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    // Nor may a tenant claim the base domain, or a host under it, as its custom domain.
    for domain in ["tenants.test", "api.tenants.test", "127.0.0.1", "10.1.2.3"] {
        app.post(
            "/api/v1/tenants",
            Some(&staff),
            json!({"name": "X", "slug": "grabber", "domain": domain}),
        )
        .await
        .assert_problem(422, "validation_failed");
    }
}

#[tokio::test]
async fn a_stale_tenant_write_cannot_revive_or_unsuspend_it() {
    let app = TestApp::spawn().await;
    let staff = app.admin_token().await;
    app.create_tenant(&staff, "racy", "basic").await;
    let services = &app.app_state.services;
    let stale = services
        .core
        .find_tenant("racy")
        .await
        .expect("lookup")
        .expect("tenant");
    app.post("/api/v1/tenants/racy/suspend", Some(&staff), json!({}))
        .await;
    // A PATCH that read the tenant before the suspension writes its fields, not its status.
    let audit = tenantry::audit::NewAuditEntry::new("test", "platform", "tenant.update", "test");
    let rename = tenantry::store::TenantChange {
        name: Some("Renamed".into()),
        updated_at: chrono::Utc::now(),
        ..Default::default()
    };
    services
        .core
        .store
        .change_tenant(stale.id, &rename, &audit)
        .await
        .expect("update");
    let now = app
        .get(&format!("/api/v1/tenants/{}", stale.id), Some(&staff))
        .await;
    assert_eq!(now.body["status"], "suspended");
    // After deletion nothing brings it back.
    app.call(Method::DELETE, "/api/v1/tenants/racy", Some(&staff), None)
        .await;
    assert!(
        services
            .core
            .store
            .change_tenant(stale.id, &rename, &audit)
            .await
            .is_err()
    );
    assert!(
        services
            .core
            .store
            .set_tenant_status(
                &stale,
                tenantry::TenantStatus::Active,
                chrono::Utc::now(),
                &audit,
            )
            .await
            .is_err()
    );
    app.get(&format!("/api/v1/tenants/{}", stale.id), Some(&staff))
        .await
        .assert_problem(404, "tenant_not_found");
}

#[tokio::test]
async fn concurrent_sign_ups_cannot_overshoot_max_users() {
    let app = TestApp::spawn().await;
    let staff = app.admin_token().await;
    let two = json!({"name": "Two", "limits": {"max_users": 2, "max_storage_bytes": 1000, "api_requests_per_day": null,
                     "requests_per_second": 100}});
    app.call(Method::PUT, "/api/v1/plans/two", Some(&staff), Some(two))
        .await;
    app.create_tenant(&staff, "crowded", "two").await;
    let attempts = (0..6).map(|i| {
        app.call_with(Method::POST, "/api/v1/users", Some(&staff), &[("x-tenant-slug", "crowded")],
            Some(json!({"email": format!("u{i}@crowded.example"), "password": USER_PASSWORD, "name": "U"})))
    });
    let results = futures::future::join_all(attempts).await;
    let created = results.iter().filter(|r| r.status == 201).count();
    let refused = results
        .iter()
        .filter(|r| r.status == 403 && r.body["code"] == "quota_exceeded")
        .count();
    assert_eq!((created, refused), (2, 4));
}

#[tokio::test]
async fn parallel_otp_guesses_cannot_outrun_the_attempt_limit() {
    let app = TestApp::spawn().await;
    let staff = app.admin_token().await;
    app.create_tenant(&staff, "otp-race", "basic").await;
    let phone = "+919811111111";
    app.call_with(Method::POST, "/api/v1/users", Some(&staff), &[("x-tenant-slug", "otp-race")],
        Some(json!({"email": "p@otp.example", "password": USER_PASSWORD, "name": "P", "phone": phone})))
        .await;
    app.call(
        Method::PUT,
        "/api/v1/tenants/otp-race/config/auth.otp",
        Some(&staff),
        Some(json!({"value": true})),
    )
    .await;
    assert_eq!(
        app.post(
            "/api/v1/auth/otp/request",
            None,
            json!({"tenant": "otp-race", "phone": phone})
        )
        .await
        .status,
        202
    );
    // Learn the code the way the log sender would deliver it: from the store's
    // hash we cannot, so guess every wrong code in parallel instead and check
    // that at most five were even compared.
    let guesses = (0..20).map(|i| {
        app.post(
            "/api/v1/auth/otp/verify",
            None,
            json!({"tenant": "otp-race", "phone": phone, "code": format!("{:06}", i)}),
        )
    });
    let results = futures::future::join_all(guesses).await;
    let accepted = results.iter().filter(|r| r.status == 200).count();
    assert!(accepted <= 1);
    let services = &app.app_state.services;
    let tenant = services
        .core
        .find_tenant("otp-race")
        .await
        .expect("lookup")
        .expect("tenant");
    // The code is spent or void: at most five attempts were ever counted.
    if let Some(rec) = services.core.store.otp(&tenant, phone).await.expect("otp") {
        assert!(rec.attempts <= 5, "attempts {}", rec.attempts);
    }
    assert!(
        services
            .core
            .store
            .spend_otp_attempt(&tenant, phone, 5)
            .await
            .expect("spend")
            .is_none()
    );
}

#[tokio::test]
async fn implicit_collection_creation_never_overwrites_a_definition() {
    let app = TestApp::spawn().await;
    let staff = app.admin_token().await;
    app.create_tenant(&staff, "defs", "basic").await;
    let (_, admin) = app
        .tenant_user(&staff, "defs", "a@defs.example", "admin")
        .await;
    app.call(
        Method::PUT,
        "/api/v1/collections/tickets",
        Some(&admin),
        Some(json!({"unique": ["ref"]})),
    )
    .await;
    let services = &app.app_state.services;
    let tenant = services
        .core
        .find_tenant("defs")
        .await
        .expect("lookup")
        .expect("tenant");
    let data = services.core.tenant_data(&tenant).await.expect("handle");
    let mut blank = data
        .collection("tickets")
        .await
        .expect("read")
        .expect("defined");
    blank.unique.clear();
    let audit =
        tenantry::audit::NewAuditEntry::new("test", "platform", "collection.create", "test");
    data.create_collection_if_absent(&blank, &audit)
        .await
        .expect("create if absent");
    assert_eq!(
        data.collection("tickets")
            .await
            .expect("read")
            .expect("defined")
            .unique,
        ["ref"]
    );
}

#[tokio::test]
async fn staff_reading_or_changing_tenant_settings_is_audited_once() {
    let app = TestApp::spawn().await;
    let staff = app.admin_token().await;
    app.create_tenant(&staff, "watched", "premium").await;
    let (_, admin) = app
        .tenant_user(&staff, "watched", "a@watched.example", "admin")
        .await;
    app.get("/api/v1/tenants/watched/config", Some(&staff))
        .await;
    app.call(
        Method::PUT,
        "/api/v1/tenants/watched/config/session.timeout",
        Some(&staff),
        Some(json!({"value": 60})),
    )
    .await;
    app.call(
        Method::PUT,
        "/api/v1/tenants/watched/branding",
        Some(&staff),
        Some(json!({"color": "#123456"})),
    )
    .await;
    app.get("/api/v1/tenants/watched/usage", Some(&staff)).await;
    app.get("/api/v1/tenants/watched/features", Some(&staff))
        .await;
    // The tenant's own admin is not staff: not audited as staff access.
    app.get("/api/v1/tenants/watched/config", Some(&admin))
        .await;
    app.get("/api/v1/tenants/watched/features", Some(&admin))
        .await;
    let services = &app.app_state.services;
    let tenant = services
        .core
        .find_tenant("watched")
        .await
        .expect("lookup")
        .expect("tenant");
    let actions: Vec<String> = services
        .core
        .store
        .list_audit(Some(&tenant), &Default::default(), 0, 100)
        .await
        .expect("audit")
        .into_iter()
        .map(|(_, e)| e.action)
        .collect();
    // Staff reads are recorded as accesses; staff changes as the change itself.
    assert_eq!(
        actions,
        [
            "tenant.create",
            "staff_access.post",
            "user.create",
            "login.success",
            "staff_config.read",
            "config.put",
            "tenant.branding",
            "staff_usage.read",
            "staff_features.read"
        ]
    );
}

/// PostgreSQL stores no NUL in text or jsonb; both engines refuse it at the
/// edge with a 422 naming the field instead of one of them failing with 500.
#[tokio::test]
async fn nul_characters_are_refused_with_the_field_named() {
    let app = TestApp::spawn().await;
    let staff = app.admin_token().await;
    let t = app
        .post(
            "/api/v1/tenants",
            Some(&staff),
            json!({"name": "bad\u{0}name", "slug": "nul-t"}),
        )
        .await;
    t.assert_problem(422, "validation_failed");
    assert!(t.text.contains("name"), "{}", t.text);
    app.create_tenant(&staff, "nul-t", "basic").await;
    let (_, token) = app
        .tenant_user(&staff, "nul-t", "a@nul.example", "admin")
        .await;
    let r = app
        .post(
            "/api/v1/collections/notes/records",
            Some(&token),
            json!({"deep": {"list": ["ok", "no\u{0}pe"]}}),
        )
        .await;
    r.assert_problem(422, "validation_failed");
    assert!(r.text.contains("deep.list[1]"), "{}", r.text);
    let key = app
        .post(
            "/api/v1/collections/notes/records",
            Some(&token),
            json!({"k\u{0}ey": 1}),
        )
        .await;
    key.assert_problem(422, "validation_failed");
    app.get(
        "/api/v1/collections/notes/records?filter[a]=x%00y",
        Some(&token),
    )
    .await
    .assert_problem(422, "validation_failed");
    app.get("/api/v1/tenants?q=a%00", Some(&staff))
        .await
        .assert_problem(422, "validation_failed");
    // Text that merely spells the escape is fine.
    let ok = app
        .post(
            "/api/v1/collections/notes/records",
            Some(&token),
            json!({"text": "\\u0000"}),
        )
        .await;
    assert_eq!(ok.status, 201, "{}", ok.text);
}

/// Two instances on one store: a unique field added through one binds the
/// other's very next write, although its collection cache predates it.
#[tokio::test]
async fn a_unique_field_added_on_one_instance_binds_the_others_writes() {
    let a = TestApp::spawn().await;
    let staff = a.admin_token().await;
    a.create_tenant(&staff, "two-inst", "basic").await;
    let (_, token) = a
        .tenant_user(&staff, "two-inst", "a@two.example", "admin")
        .await;
    let same = a.app_state.settings.clone();
    let b = TestApp::spawn_with(tempfile::tempdir().expect("dir"), move |s| {
        s.data_dir = same.data_dir.clone();
        s.database_url = same.database_url.clone();
    })
    .await;
    let first = b
        .post(
            "/api/v1/collections/notes/records",
            Some(&token),
            json!({"k": 1}),
        )
        .await;
    assert_eq!(first.status, 201, "{}", first.text);
    // B now holds the definition without a unique field.
    let listed = b
        .get("/api/v1/collections/notes/records", Some(&token))
        .await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    let defined = a
        .call(
            Method::PUT,
            "/api/v1/collections/notes",
            Some(&token),
            Some(json!({"unique": ["k"]})),
        )
        .await;
    assert!(defined.status.is_success(), "{}", defined.text);
    b.post(
        "/api/v1/collections/notes/records",
        Some(&token),
        json!({"k": 1}),
    )
    .await
    .assert_problem(409, "conflict");
}

/// A deactivation and a rename of one user at once, many times: both take
/// effect every time (a PATCH once rewrote the whole row it had read, so
/// the rename could undo the deactivation).
#[tokio::test]
async fn concurrent_user_patches_of_different_fields_both_take_effect() {
    let app = TestApp::spawn().await;
    let staff = app.admin_token().await;
    app.create_tenant(&staff, "lost-upd", "basic").await;
    let (_, admin) = app
        .tenant_user(&staff, "lost-upd", "admin@lost-upd.example", "admin")
        .await;
    let (user, _) = app
        .tenant_user(&staff, "lost-upd", "u@lost-upd.example", "user")
        .await;
    let path = format!("/api/v1/users/{}", user["id"].as_str().expect("id"));
    for i in 0..25 {
        let name = format!("name {i}");
        let (off, renamed) = tokio::join!(
            app.call(
                Method::PATCH,
                &path,
                Some(&admin),
                Some(json!({"active": false}))
            ),
            app.call(
                Method::PATCH,
                &path,
                Some(&admin),
                Some(json!({"name": name}))
            ),
        );
        assert_eq!(off.status, 200, "{}", off.text);
        assert_eq!(renamed.status, 200, "{}", renamed.text);
        let now = app.get(&path, Some(&admin)).await;
        assert_eq!(now.body["active"], false, "round {i}: {}", now.text);
        assert_eq!(now.body["name"], name, "round {i}");
        let on = app
            .call(
                Method::PATCH,
                &path,
                Some(&admin),
                Some(json!({"active": true})),
            )
            .await;
        assert_eq!(on.status, 200, "{}", on.text);
    }
}

/// Two PATCHes of one tenant at once, and a PATCH racing a move: each
/// writes only its own fields, so none undoes another (a stale tier
/// written back after a move would route the tenant to its old copy).
#[tokio::test]
async fn concurrent_tenant_patches_and_a_move_do_not_undo_each_other() {
    let app = TestApp::spawn().await;
    let staff = app.admin_token().await;
    app.create_tenant(&staff, "lost-ten", "basic").await;
    for i in 0..15 {
        let name = format!("Name {i}");
        let meta = json!({"round": i});
        let (a, b) = tokio::join!(
            app.call(
                Method::PATCH,
                "/api/v1/tenants/lost-ten",
                Some(&staff),
                Some(json!({"name": name}))
            ),
            app.call(
                Method::PATCH,
                "/api/v1/tenants/lost-ten",
                Some(&staff),
                Some(json!({"metadata": meta}))
            ),
        );
        assert_eq!(a.status, 200, "{}", a.text);
        assert_eq!(b.status, 200, "{}", b.text);
        let now = app.get("/api/v1/tenants/lost-ten", Some(&staff)).await;
        assert_eq!(now.body["name"], name, "round {i}");
        assert_eq!(now.body["metadata"], meta, "round {i}");
    }
    let moved = app
        .post(
            "/api/v1/tenants/lost-ten/move",
            Some(&staff),
            json!({"isolation": "dedicated"}),
        )
        .await;
    assert_eq!(moved.status, 202, "{}", moved.text);
    let job = moved.body["job_id"].clone();
    // PATCHes all through the move: none may write the old tier back.
    let mut round = 0;
    loop {
        let res = app
            .call(
                Method::PATCH,
                "/api/v1/tenants/lost-ten",
                Some(&staff),
                Some(json!({"name": format!("During {round}")})),
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.text);
        round += 1;
        let status = app
            .get(
                &format!("/api/v1/jobs/{}", job.as_str().expect("id")),
                Some(&staff),
            )
            .await;
        if status.body["status"] != "running" && status.body["status"] != "queued" {
            assert_eq!(status.body["status"], "succeeded", "{}", status.text);
            break;
        }
    }
    app.call(
        Method::PATCH,
        "/api/v1/tenants/lost-ten",
        Some(&staff),
        Some(json!({"name": "After"})),
    )
    .await;
    let now = app.get("/api/v1/tenants/lost-ten", Some(&staff)).await;
    assert_eq!(now.body["isolation"], "dedicated", "{}", now.text);
    assert_eq!(now.body["name"], "After");
}

/// One tenant cannot load the shared tier with collections and indexes
/// without bound: its plan caps both (implicit collections included).
#[tokio::test]
async fn the_plan_caps_collections_and_distinct_indexed_fields() {
    let app = TestApp::spawn().await;
    let staff = app.admin_token().await;
    let plan = json!({"name": "Narrow", "limits": {"max_users": 10, "max_storage_bytes": 1000000,
        "api_requests_per_day": null, "requests_per_second": null,
        "max_collections": 2, "max_indexed_fields": 3}});
    let res = app
        .call(
            Method::PUT,
            "/api/v1/plans/narrow",
            Some(&staff),
            Some(plan),
        )
        .await;
    assert!(res.status.is_success(), "{}", res.text);
    assert_eq!(res.body["limits"]["max_indexed_fields"], 3);
    app.create_tenant(&staff, "narrow-co", "narrow").await;
    let (_, admin) = app
        .tenant_user(&staff, "narrow-co", "a@narrow-co.example", "admin")
        .await;
    let define = |name: &'static str, indexed: Value| {
        let admin = admin.clone();
        let app = &app;
        async move {
            app.call(
                Method::PUT,
                &format!("/api/v1/collections/{name}"),
                Some(&admin),
                Some(json!({"indexed": indexed})),
            )
            .await
        }
    };
    assert!(define("one", json!(["a", "b"])).await.status.is_success());
    assert!(define("two", json!(["b", "c"])).await.status.is_success());
    define("two", json!(["b", "c", "d"]))
        .await
        .assert_problem(403, "quota_exceeded");
    // Redefining within the budget is fine; a third collection is not.
    assert!(define("one", json!(["a"])).await.status.is_success());
    define("three", json!([]))
        .await
        .assert_problem(403, "quota_exceeded");
    app.post(
        "/api/v1/collections/three/records",
        Some(&admin),
        json!({"n": 1}),
    )
    .await
    .assert_problem(403, "quota_exceeded");
    // Plans stored before the limits existed get the defaults, not "unlimited".
    let basic = app.get("/api/v1/plans/basic", Some(&staff)).await;
    assert_eq!(
        basic.body["limits"]["max_collections"], 100,
        "{}",
        basic.text
    );
}

/// A field with a distinct value per record answers the largest groups and
/// says it left the rest out, instead of one group per record.
#[tokio::test]
async fn stats_answer_the_largest_groups_and_say_when_there_were_more() {
    use futures::StreamExt;
    let app = TestApp::spawn().await;
    let staff = app.admin_token().await;
    app.create_busy_tenant(&staff, "many-groups", "shared")
        .await;
    let (_, token) = app
        .tenant_user(&staff, "many-groups", "a@many-groups.example", "admin")
        .await;
    let values: Vec<Value> = (0..1001)
        .map(|i| json!(i))
        .chain(std::iter::repeat_n(json!("x"), 3))
        .collect();
    let statuses: Vec<u16> = futures::stream::iter(values.into_iter().map(|k| {
        let token = token.clone();
        let app = &app;
        async move {
            app.post(
                "/api/v1/collections/notes/records",
                Some(&token),
                json!({"k": k}),
            )
            .await
            .status
            .as_u16()
        }
    }))
    .buffer_unordered(16)
    .collect()
    .await;
    assert!(statuses.iter().all(|s| *s == 201));
    let stats = app
        .get("/api/v1/collections/notes/stats?group_by=k", Some(&token))
        .await;
    assert_eq!(stats.status, 200, "{}", stats.text);
    assert_eq!(stats.body["total"], 1004);
    assert_eq!(stats.body["truncated"], true);
    let groups = stats.body["groups"].as_object().expect("groups");
    assert_eq!(groups.len(), 1000);
    assert_eq!(groups["x"], 3, "the largest group is kept");
}
