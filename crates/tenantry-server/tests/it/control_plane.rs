//! The control plane through HTTP: tenants, plans, organizations, config.

use crate::support::{ADMIN_PASSWORD, Backend, TestApp};
use reqwest::Method;
use serde_json::{Value, json};
use tenantry::{OrgId, Role};

#[tokio::test]
async fn slug_rules_are_enforced_by_the_api() {
    let app = TestApp::spawn().await;
    let token = app.admin_token().await;
    let cases = [
        ("acme", 201),
        ("a--b", 201),
        ("x1-y2", 201),
        ("Acme", 422),
        ("ab", 422),
        (&*"a".repeat(64), 422),
        ("../x", 422),
        ("-lead", 422),
        ("trail-", 422),
        ("under_score", 422),
        ("www", 422),
        ("api", 422),
        ("admin", 422),
        ("app", 422),
        ("default", 422),
    ];
    for (slug, status) in cases {
        let res = app
            .post(
                "/api/v1/tenants",
                Some(&token),
                json!({"name": "T", "slug": slug}),
            )
            .await;
        assert_eq!(res.status.as_u16(), status, "slug {slug:?}: {}", res.text);
        if status == 422 {
            assert_eq!(res.body["errors"][0]["field"], "slug");
        }
    }
}

#[tokio::test]
async fn tenant_lifecycle_create_get_patch_suspend_activate_delete() {
    let app = TestApp::spawn().await;
    let token = app.admin_token().await;
    let metadata = json!({"district": "Pune", "state": "MH", "representative": {"email": "mp@example.org"},
                          "population": 3_100_000, "ward_count": 41});
    let res = app
        .post(
            "/api/v1/tenants",
            Some(&token),
            json!({"name": "Pune Grievances", "slug": "pune", "plan": "premium", "domain": "Grievances.Pune.example",
                   "metadata": metadata}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let t = res.body.clone();
    assert_eq!(t["status"], "active");
    assert_eq!(t["isolation"], "shared");
    assert_eq!(t["domain"], "grievances.pune.example");
    assert_eq!(t["metadata"], metadata);
    assert_eq!(res.headers["x-tenant-id"], t["id"].as_str().expect("id"));
    let id = t["id"].as_str().expect("id").to_owned();

    // Enterprise defaults to a dedicated database; an explicit choice wins.
    let ent = app.create_tenant(&token, "big-corp", "enterprise").await;
    assert_eq!(ent["isolation"], "dedicated");
    let res = app
        .post(
            "/api/v1/tenants",
            Some(&token),
            json!({"name": "S", "slug": "small-ent", "plan": "enterprise", "isolation": "shared"}),
        )
        .await;
    assert_eq!(res.body["isolation"], "shared");

    // By id and by slug.
    assert_eq!(
        app.get(&format!("/api/v1/tenants/{id}"), Some(&token))
            .await
            .body["slug"],
        "pune"
    );
    assert_eq!(
        app.get("/api/v1/tenants/pune", Some(&token)).await.body["id"],
        id.as_str()
    );

    // Domain must be unique; slug too.
    app.post(
        "/api/v1/tenants",
        Some(&token),
        json!({"name": "X", "slug": "other", "domain": "grievances.pune.example"}),
    )
    .await
    .assert_problem(409, "conflict");

    let patched = app
        .call(
            Method::PATCH,
            "/api/v1/tenants/pune",
            Some(&token),
            Some(json!({"name": "Pune City", "slug": "pune-city", "domain": null})),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    assert_eq!(patched.body["name"], "Pune City");
    assert_eq!(patched.body["slug"], "pune-city");
    assert_eq!(patched.body["domain"], Value::Null);
    app.get("/api/v1/tenants/pune", Some(&token))
        .await
        .assert_problem(404, "tenant_not_found");
    app.call(
        Method::PATCH,
        "/api/v1/tenants/pune-city",
        Some(&token),
        Some(json!({"slug": "Bad Slug"})),
    )
    .await
    .assert_problem(422, "validation_failed");
    app.call(
        Method::PATCH,
        "/api/v1/tenants/pune-city",
        Some(&token),
        Some(json!({"slug": "big-corp"})),
    )
    .await
    .assert_problem(409, "conflict");

    let suspended = app
        .post(
            &format!("/api/v1/tenants/{id}/suspend"),
            Some(&token),
            json!({}),
        )
        .await;
    assert_eq!(suspended.status, 200);
    assert_eq!(suspended.body["status"], "suspended");
    let active = app
        .post(
            &format!("/api/v1/tenants/{id}/activate"),
            Some(&token),
            json!({}),
        )
        .await;
    assert_eq!(active.body["status"], "active");

    let plan = app
        .post(
            &format!("/api/v1/tenants/{id}/plan"),
            Some(&token),
            json!({"plan": "enterprise"}),
        )
        .await;
    // Enterprise tenants default to a database of their own: the plan
    // change moves the tenant there, online, as a job.
    assert_eq!(plan.status, 202, "{}", plan.text);
    let job = app.wait_job(&token, &plan.body["job_id"]).await;
    assert_eq!(job["kind"], "move");
    let moved = app
        .get(&format!("/api/v1/tenants/{id}"), Some(&token))
        .await;
    assert_eq!(moved.body["plan"], "enterprise");
    assert_eq!(moved.body["isolation"], "dedicated");
    app.post(
        &format!("/api/v1/tenants/{id}/plan"),
        Some(&token),
        json!({"plan": "gold"}),
    )
    .await
    .assert_problem(422, "validation_failed");

    let deleted = app
        .call(
            Method::DELETE,
            &format!("/api/v1/tenants/{id}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(deleted.status, 204);
    app.get(&format!("/api/v1/tenants/{id}"), Some(&token))
        .await
        .assert_problem(404, "tenant_not_found");
    app.call(
        Method::DELETE,
        &format!("/api/v1/tenants/{id}"),
        Some(&token),
        None,
    )
    .await
    .assert_problem(404, "tenant_not_found");
    app.post(
        &format!("/api/v1/tenants/{id}/suspend"),
        Some(&token),
        json!({}),
    )
    .await
    .assert_problem(404, "tenant_not_found");
    // A purged tenant's slug may be reused.
    app.create_tenant(&token, "pune-city", "basic").await;
    let listed = app
        .get("/api/v1/tenants?status=deleted", Some(&token))
        .await;
    assert_eq!(listed.body["items"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn tenant_list_filters_and_paginates_with_a_cursor() {
    let app = TestApp::spawn().await;
    let token = app.admin_token().await;
    let mut created = Vec::new();
    for i in 0..7 {
        let plan = if i % 2 == 0 { "basic" } else { "premium" };
        created.push(app.create_tenant(&token, &format!("shop-{i}"), plan).await["id"].clone());
    }
    app.post("/api/v1/tenants/shop-3/suspend", Some(&token), json!({}))
        .await;

    let mut seen = Vec::new();
    let mut path = "/api/v1/tenants?limit=3".to_owned();
    loop {
        let page = app.get(&path, Some(&token)).await;
        assert_eq!(page.status, 200, "{}", page.text);
        let items = page.body["items"].as_array().expect("items").clone();
        assert!(items.len() <= 3);
        seen.extend(items.iter().map(|t| t["id"].clone()));
        match page.body["next_cursor"].as_str() {
            Some(c) => path = format!("/api/v1/tenants?limit=3&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(
        seen, created,
        "every tenant exactly once, in creation order"
    );

    let count = |v: &Value| v["items"].as_array().map_or(0, Vec::len);
    assert_eq!(
        count(
            &app.get("/api/v1/tenants?plan=premium", Some(&token))
                .await
                .body
        ),
        3
    );
    assert_eq!(
        count(
            &app.get("/api/v1/tenants?status=suspended", Some(&token))
                .await
                .body
        ),
        1
    );
    assert_eq!(
        count(&app.get("/api/v1/tenants?q=SHOP-1", Some(&token)).await.body),
        1
    );
    assert_eq!(
        count(&app.get("/api/v1/tenants?q=%25", Some(&token)).await.body),
        0,
        "% is literal"
    );
    assert_eq!(
        count(
            &app.get("/api/v1/tenants?limit=100000", Some(&token))
                .await
                .body
        ),
        7,
        "clamped, not refused"
    );
    app.get("/api/v1/tenants?status=bogus", Some(&token))
        .await
        .assert_problem(422, "validation_failed");
    app.get("/api/v1/tenants?cursor=garbage!", Some(&token))
        .await
        .assert_problem(422, "validation_failed");
    app.get("/api/v1/tenants?limit=abc", Some(&token))
        .await
        .assert_problem(422, "validation_failed");
}

#[tokio::test]
async fn plans_are_built_in_and_editable_by_super_admins() {
    let app = TestApp::spawn().await;
    let token = app.admin_token().await;
    let plans = app.get("/api/v1/plans", Some(&token)).await;
    let codes: Vec<&str> = plans.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|p| p["code"].as_str())
        .collect();
    assert_eq!(codes, ["basic", "custom", "enterprise", "premium"]);
    let basic = app.get("/api/v1/plans/basic", Some(&token)).await.body;
    assert_eq!(basic["limits"]["max_users"], 100);
    assert_eq!(basic["limits"]["api_requests_per_day"], 1000);
    assert_eq!(basic["features"]["custom_branding"], false);
    let custom = app.get("/api/v1/plans/custom", Some(&token)).await.body;
    assert_eq!(
        custom["limits"]["api_requests_per_day"],
        Value::Null,
        "unlimited"
    );
    app.get("/api/v1/plans/gold", Some(&token))
        .await
        .assert_problem(404, "not_found");

    let gold = json!({"name": "Gold", "limits": {"max_users": 5, "max_storage_bytes": 1000, "api_requests_per_day": 50,
                      "requests_per_second": 2}, "features": {"custom_branding": true},
                      "config_defaults": {"session.timeout": 60}, "default_isolation": "shared"});
    let put = app
        .call(Method::PUT, "/api/v1/plans/gold", Some(&token), Some(gold))
        .await;
    assert_eq!(put.status, 200, "{}", put.text);
    assert_eq!(put.body["code"], "gold");
    let t = app.create_tenant(&token, "goldie", "gold").await;
    assert_eq!(t["plan"], "gold");

    let mut edited = basic.clone();
    edited["limits"]["max_users"] = json!(150);
    let put = app
        .call(
            Method::PUT,
            "/api/v1/plans/basic",
            Some(&token),
            Some(edited),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.text);
    assert_eq!(
        app.get("/api/v1/plans/basic", Some(&token)).await.body["limits"]["max_users"],
        150
    );

    let bad = json!({"name": "Bad", "limits": {"max_users": 1, "max_storage_bytes": 1, "api_requests_per_day": 1, "requests_per_second": 1},
                     "config_defaults": {"session.timeout": 0}});
    app.call(Method::PUT, "/api/v1/plans/bad", Some(&token), Some(bad))
        .await
        .assert_problem(422, "validation_failed");
    // A limit no store column or int64 client can hold.
    let huge = json!({"name": "Huge", "limits": {"max_users": 1, "max_storage_bytes": 1, "api_requests_per_day": 1,
                      "requests_per_second": 9_223_372_036_854_775_808_u64}});
    let refused = app
        .call(Method::PUT, "/api/v1/plans/huge", Some(&token), Some(huge))
        .await;
    refused.assert_problem(422, "validation_failed");
    assert_eq!(
        refused.body["errors"][0]["field"], "limits.requests_per_second",
        "{}",
        refused.text
    );
    app.call(Method::PUT, "/api/v1/plans/Bad%20Code", Some(&token), Some(json!({"name": "x", "limits": {
        "max_users": 1, "max_storage_bytes": 1, "api_requests_per_day": 1, "requests_per_second": 1}})))
        .await
        .assert_problem(422, "validation_failed");
}

/// An org admin, created through the service layer (its HTTP route comes with identity).
async fn org_admin_token(app: &TestApp, org: OrgId, email: &str) -> String {
    app.app_state
        .services
        .identity
        .create_platform_user(
            &tenantry_server::control::console_operator(),
            email,
            ADMIN_PASSWORD.into(),
            "Org admin",
            Role::OrgAdmin,
            Some(org),
        )
        .await
        .expect("org admin");
    let res = app.login(email, ADMIN_PASSWORD).await;
    assert_eq!(res.status, 200, "{}", res.text);
    res.body["access_token"].as_str().expect("token").to_owned()
}

#[tokio::test]
async fn organizations_group_tenants_and_confine_their_admins() {
    let app = TestApp::spawn().await;
    let token = app.admin_token().await;
    let org = app
        .post(
            "/api/v1/organizations",
            Some(&token),
            json!({"name": "Acme Group", "description": "holding"}),
        )
        .await;
    assert_eq!(org.status, 201, "{}", org.text);
    let org_id = org.body["id"].as_str().expect("id").to_owned();
    let other = app
        .post(
            "/api/v1/organizations",
            Some(&token),
            json!({"name": "Other"}),
        )
        .await
        .body;
    app.post("/api/v1/organizations", Some(&token), json!({"name": " "}))
        .await
        .assert_problem(422, "validation_failed");

    let mine = app
        .post(
            "/api/v1/tenants",
            Some(&token),
            json!({"name": "Acme A", "slug": "acme-a", "organization_id": org_id}),
        )
        .await;
    assert_eq!(mine.status, 201, "{}", mine.text);
    let theirs = app
        .post(
            "/api/v1/tenants",
            Some(&token),
            json!({"name": "Other A", "slug": "other-a", "organization_id": other["id"]}),
        )
        .await;
    assert_eq!(theirs.status, 201);
    app.post(
        "/api/v1/tenants",
        Some(&token),
        json!({"name": "X", "slug": "nowhere", "organization_id": uuid::Uuid::now_v7()}),
    )
    .await
    .assert_problem(422, "validation_failed");

    let listed = app
        .get(
            &format!("/api/v1/organizations/{org_id}/tenants"),
            Some(&token),
        )
        .await;
    assert_eq!(listed.body["items"][0]["slug"], "acme-a");
    assert_eq!(listed.body["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        app.get(&format!("/api/v1/organizations/{org_id}"), Some(&token))
            .await
            .body["name"],
        "Acme Group"
    );
    assert_eq!(
        app.get("/api/v1/organizations", Some(&token)).await.body["items"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );

    let oa = org_admin_token(&app, org_id.parse().expect("org"), "oa@acme.example").await;
    // Sees its own organization's tenants only; another organization's tenant is unknown.
    let visible = app.get("/api/v1/tenants", Some(&oa)).await;
    let slugs: Vec<&str> = visible.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|t| t["slug"].as_str())
        .collect();
    assert_eq!(slugs, ["acme-a"]);
    assert_eq!(
        app.get("/api/v1/tenants/acme-a", Some(&oa)).await.status,
        200
    );
    app.get("/api/v1/tenants/other-a", Some(&oa))
        .await
        .assert_problem(404, "tenant_not_found");
    app.post("/api/v1/tenants/other-a/suspend", Some(&oa), json!({}))
        .await
        .assert_problem(404, "tenant_not_found");
    app.get(
        &format!(
            "/api/v1/organizations/{}",
            other["id"].as_str().expect("id")
        ),
        Some(&oa),
    )
    .await
    .assert_problem(404, "not_found");
    assert_eq!(
        app.get("/api/v1/organizations", Some(&oa)).await.body["items"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    // Creates tenants into its own organization, and no other.
    let created = app
        .post(
            "/api/v1/tenants",
            Some(&oa),
            json!({"name": "Acme B", "slug": "acme-b"}),
        )
        .await;
    assert_eq!(created.body["organization_id"], org_id.as_str());
    app.post(
        "/api/v1/tenants",
        Some(&oa),
        json!({"name": "Sneaky", "slug": "sneaky", "organization_id": other["id"]}),
    )
    .await
    .assert_problem(403, "forbidden");
    // Platform-wide acts stay with super-admins.
    app.post(
        "/api/v1/organizations",
        Some(&oa),
        json!({"name": "Mine now"}),
    )
    .await
    .assert_problem(403, "forbidden");
    app.call(Method::PUT, "/api/v1/plans/basic", Some(&oa), Some(json!({"name": "x", "limits": {
        "max_users": 1, "max_storage_bytes": 1, "api_requests_per_day": 1, "requests_per_second": 1}})))
        .await
        .assert_problem(403, "forbidden");
}

#[tokio::test]
async fn config_overrides_effective_view_and_encryption() {
    let app = TestApp::spawn().await;
    let token = app.admin_token().await;
    app.create_tenant(&token, "cfg", "premium").await;
    let put = |key: &str, body: Value| {
        let path = format!("/api/v1/tenants/cfg/config/{key}");
        let (app, token) = (&app, token.clone());
        async move { app.call(Method::PUT, &path, Some(&token), Some(body)).await }
    };

    let res = put("session.timeout", json!({"value": 900})).await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["key"], "session.timeout");
    assert_eq!(res.body["value"], 900);
    assert_eq!(res.body["encrypted"], false);
    assert!(res.body["updated_at"].is_string());
    assert_eq!(
        put(
            "security.password_policy",
            json!({"value": {"min_length": 16}})
        )
        .await
        .status,
        200
    );
    put("session.timeout", json!({"value": 0}))
        .await
        .assert_problem(422, "validation_failed");
    put("Bad..Key", json!({"value": 1}))
        .await
        .assert_problem(422, "validation_failed");

    let secret = "sk_live_Very-Secret-Value-42";
    let res = put(
        "payments.api_key",
        json!({"value": secret, "encrypted": true}),
    )
    .await;
    assert_eq!(res.body["value"], "***");
    assert_eq!(res.body["encrypted"], true);

    let overrides = app
        .get("/api/v1/tenants/cfg/config", Some(&token))
        .await
        .body;
    assert_eq!(
        overrides,
        json!({"payments.api_key": "***", "security.password_policy": {"min_length": 16}, "session.timeout": 900})
    );
    let effective = app
        .get("/api/v1/tenants/cfg/config?effective=true", Some(&token))
        .await
        .body;
    assert_eq!(effective["session.timeout"], 900);
    assert_eq!(effective["security.password_policy"]["min_length"], 16);
    assert_eq!(
        effective["security.password_policy"]["require_special_chars"], true,
        "plan rule kept"
    );
    assert_eq!(effective["auth.otp"], false);
    assert_eq!(effective["payments.api_key"], "***");

    let revealed = app
        .get(
            "/api/v1/tenants/cfg/config/payments.api_key?reveal=true",
            Some(&token),
        )
        .await;
    assert_eq!(revealed.body["value"], secret);
    assert_eq!(
        app.get("/api/v1/tenants/cfg/config?reveal=true", Some(&token))
            .await
            .body["payments.api_key"],
        secret
    );
    app.get("/api/v1/tenants/cfg/config/nope", Some(&token))
        .await
        .assert_problem(404, "not_found");

    let org = app
        .post("/api/v1/organizations", Some(&token), json!({"name": "O"}))
        .await
        .body;
    app.post(
        "/api/v1/tenants",
        Some(&token),
        json!({"name": "OT", "slug": "org-cfg", "organization_id": org["id"]}),
    )
    .await;
    let oa = org_admin_token(
        &app,
        org["id"].as_str().expect("id").parse().expect("org"),
        "oa@o.example",
    )
    .await;
    app.get("/api/v1/tenants/org-cfg/config?reveal=true", Some(&oa))
        .await
        .assert_problem(403, "forbidden");
    app.get("/api/v1/tenants/cfg/config", Some(&oa))
        .await
        .assert_problem(404, "tenant_not_found");

    assert_eq!(
        app.call(
            Method::DELETE,
            "/api/v1/tenants/cfg/config/session.timeout",
            Some(&token),
            None
        )
        .await
        .status,
        204
    );
    app.call(
        Method::DELETE,
        "/api/v1/tenants/cfg/config/session.timeout",
        Some(&token),
        None,
    )
    .await
    .assert_problem(404, "not_found");
    let effective = app
        .get("/api/v1/tenants/cfg/config?effective=true", Some(&token))
        .await
        .body;
    assert_eq!(effective["session.timeout"], 7200, "plan default again");

    // The secret is nowhere in the database files, WAL included (read while
    // the server runs, so the WAL has not been folded into the main file yet).
    fn scan(dir: &std::path::Path, secret: &str) {
        for entry in std::fs::read_dir(dir).expect("dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                scan(&path, secret);
                continue;
            }
            let bytes = std::fs::read(&path).expect("read");
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "plaintext secret found in {}",
                path.display()
            );
        }
    }
    match crate::BACKEND {
        Backend::Sqlite => {
            assert!(app.dir.path().join("control.db-wal").exists());
            scan(app.dir.path(), secret);
        }
        Backend::Postgres => {
            scan(app.dir.path(), secret);
            let mut db = app.pg_owner().await;
            let stored: Vec<String> = sqlx::query_scalar("SELECT value::text FROM tenant_config")
                .fetch_all(&mut db)
                .await
                .expect("config rows");
            assert!(!stored.is_empty());
            assert!(
                stored.iter().all(|v| !v.contains(secret)),
                "plaintext secret in tenant_config"
            );
        }
    }
    let dir = app.stop().await;

    // Everything survives a restart, and the secret still decrypts.
    let app = TestApp::spawn_with(dir, |_| {}).await;
    let token = app.admin_token().await;
    let overrides = app
        .get("/api/v1/tenants/cfg/config?reveal=true", Some(&token))
        .await
        .body;
    assert_eq!(overrides["payments.api_key"], secret);
    assert_eq!(
        overrides["security.password_policy"],
        json!({"min_length": 16})
    );
}

#[tokio::test]
async fn branding_is_public_and_needs_the_feature_to_change() {
    let app = TestApp::spawn().await;
    let token = app.admin_token().await;
    app.create_tenant(&token, "plain", "basic").await;
    let fancy = app
        .post("/api/v1/tenants", Some(&token), json!({"name": "F", "slug": "fancy", "plan": "premium", "branding": {"color": "#112233"}}))
        .await;
    assert_eq!(fancy.status, 201);
    app.post(
        "/api/v1/tenants",
        Some(&token),
        json!({"name": "B", "slug": "basic-brand", "branding": {"color": "#fff"}}),
    )
    .await
    .assert_problem(403, "feature_not_enabled");

    let public = app.get("/api/v1/tenants/fancy/branding", None).await;
    assert_eq!(public.status, 200);
    assert_eq!(public.body, json!({"color": "#112233"}));
    app.get("/api/v1/tenants/nobody/branding", None)
        .await
        .assert_problem(404, "tenant_not_found");

    let new_brand = json!({"color": "#000000", "logo_url": "https://cdn.example/logo.png"});
    let put = app
        .call(
            Method::PUT,
            "/api/v1/tenants/fancy/branding",
            Some(&token),
            Some(new_brand.clone()),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.text);
    assert_eq!(
        app.get("/api/v1/tenants/fancy/branding", None).await.body,
        new_brand
    );
    app.call(
        Method::PUT,
        "/api/v1/tenants/fancy/branding",
        None,
        Some(new_brand.clone()),
    )
    .await
    .assert_problem(401, "unauthorized");
    app.call(
        Method::PUT,
        "/api/v1/tenants/plain/branding",
        Some(&token),
        Some(new_brand),
    )
    .await
    .assert_problem(403, "feature_not_enabled");
    app.call(
        Method::PUT,
        "/api/v1/tenants/fancy/branding",
        Some(&token),
        Some(json!([1])),
    )
    .await
    .assert_problem(422, "validation_failed");

    let features = app
        .get("/api/v1/tenants/plain/features", Some(&token))
        .await
        .body;
    assert_eq!(features["custom_branding"], false);
    assert_eq!(features["priority_support"], false);
    // A tenant-level override of one flag.
    app.call(
        Method::PUT,
        "/api/v1/tenants/plain/config/features",
        Some(&token),
        Some(json!({"value": {"custom_branding": true}})),
    )
    .await;
    let features = app
        .get("/api/v1/tenants/plain/features", Some(&token))
        .await
        .body;
    assert_eq!(features["custom_branding"], true);
    let enterprise = app.create_tenant(&token, "ent", "enterprise").await;
    let features = app
        .get(
            &format!(
                "/api/v1/tenants/{}/features",
                enterprise["id"].as_str().expect("id")
            ),
            Some(&token),
        )
        .await
        .body;
    assert_eq!(
        features,
        json!({"advanced_analytics": true, "ai_verification": true, "biometric_auth": true,
                                "custom_branding": true, "priority_support": true})
    );
}

#[tokio::test]
async fn login_refuses_unknown_email_and_wrong_password_alike() {
    let app = TestApp::spawn().await;
    let unknown = app.login("nobody@test.example", "whatever-pass").await;
    let wrong = app
        .login(crate::support::ADMIN_EMAIL, "whatever-pass")
        .await;
    unknown.assert_problem(401, "unauthorized");
    wrong.assert_problem(401, "unauthorized");
    assert_eq!(unknown.body, wrong.body);

    let ok = app.login(crate::support::ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(ok.body["token_type"], "Bearer");
    assert_eq!(ok.body["expires_in"], 3600);
    assert_eq!(ok.body["user"]["role"], "super_admin");
    assert_eq!(ok.body["tenant"], Value::Null);
    // Claims per the contract.
    let token = ok.body["access_token"].as_str().expect("token");
    let payload = token.split('.').nth(1).expect("payload");
    use base64::Engine;
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("b64"),
    )
    .expect("json");
    for claim in ["sub", "role", "iat", "exp", "iss", "aud", "jti"] {
        assert!(!claims[claim].is_null(), "claim {claim} missing: {claims}");
    }
    assert!(claims.get("tid").is_none(), "platform users carry no tid");
}
