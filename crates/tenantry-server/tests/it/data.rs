//! The data plane on both isolation tiers: CRUD, concurrency, filters,
//! pagination, schema, uniqueness, features, quota, stats, purge, restart.

use crate::support::{Res, TestApp};
use reqwest::Method;
use serde_json::{Value, json};

const TIERS: [&str; 2] = ["shared", "dedicated"];

/// A tenant on `plan` and `tier`, and an admin token bound to it.
async fn tenant(app: &TestApp, staff: &str, slug: &str, plan: &str, tier: &str) -> (Value, String) {
    let t = app
        .post(
            "/api/v1/tenants",
            Some(staff),
            json!({"name": slug, "slug": slug, "plan": plan, "isolation": tier}),
        )
        .await;
    assert_eq!(t.status, 201, "{}", t.text);
    assert_eq!(t.body["isolation"], tier);
    let (_, token) = app
        .tenant_user(staff, slug, &format!("admin@{slug}.example"), "admin")
        .await;
    (t.body, token)
}

async fn post_record(app: &TestApp, token: &str, coll: &str, data: Value) -> Res {
    app.post(
        &format!("/api/v1/collections/{coll}/records"),
        Some(token),
        data,
    )
    .await
}

fn ids(res: &Res) -> Vec<String> {
    res.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test]
async fn records_crud_with_versions_etags_and_merge_patch() {
    let app = TestApp::spawn().await;
    let staff = app.admin_token().await;
    for tier in TIERS {
        let (_, t) = tenant(&app, &staff, &format!("crud-{tier}"), "basic", tier).await;
        let res = post_record(&app, &t, "complaints", json!({"title": "Pothole on Main Road", "status": "open",
                                                             "tenant_id": "someone-else", "id": "x"}))
            .await;
        assert_eq!(res.status, 201, "{}", res.text);
        let id = res.body["id"].as_str().expect("id").to_owned();
        assert_ne!(id, "x", "an id inside the data is just data");
        assert_eq!(res.body["data"]["tenant_id"], "someone-else");
        assert_eq!(res.body["version"], 1);
        assert_eq!(res.headers["etag"], "\"1\"");
        assert_eq!(
            res.headers["location"],
            format!("/api/v1/collections/complaints/records/{id}").as_str()
        );
        let me = app.get("/api/v1/auth/me", Some(&t)).await;
        assert_eq!(res.body["created_by"], me.body["user"]["id"]);
        let path = format!("/api/v1/collections/complaints/records/{id}");

        let got = app.get(&path, Some(&t)).await;
        assert_eq!(got.body["data"]["title"], "Pothole on Main Road");

        let put = app
            .call(
                Method::PUT,
                &path,
                Some(&t),
                Some(json!({"title": "Pothole", "status": "open", "ward": 4})),
            )
            .await;
        assert_eq!(put.body["version"], 2);
        assert_eq!(
            put.body["data"],
            json!({"title": "Pothole", "status": "open", "ward": 4})
        );

        let patched = app
            .call_with(
                Method::PATCH,
                &path,
                Some(&t),
                &[("content-type", "application/merge-patch+json")],
                Some(json!({"status": "resolved", "ward": null, "meta": {"by": "crew-7"}})),
            )
            .await;
        assert_eq!(patched.status, 200, "{}", patched.text);
        assert_eq!(
            patched.body["data"],
            json!({"title": "Pothole", "status": "resolved", "meta": {"by": "crew-7"}})
        );
        assert_eq!(patched.body["version"], 3);
        assert_eq!(patched.headers["etag"], "\"3\"");

        // Stale If-Match → 412; current → OK.
        app.call_with(
            Method::PUT,
            &path,
            Some(&t),
            &[("if-match", "\"2\"")],
            Some(json!({"a": 1})),
        )
        .await
        .assert_problem(412, "precondition_failed");
        let ok = app
            .call_with(
                Method::PATCH,
                &path,
                Some(&t),
                &[("if-match", "\"3\"")],
                Some(json!({"a": 1})),
            )
            .await;
        assert_eq!(ok.body["version"], 4);
        app.call_with(
            Method::DELETE,
            &path,
            Some(&t),
            &[("if-match", "\"3\"")],
            None,
        )
        .await
        .assert_problem(412, "precondition_failed");

        // Arrays and scalars are not records.
        post_record(&app, &t, "complaints", json!([1, 2]))
            .await
            .assert_problem(422, "validation_failed");
        post_record(&app, &t, "complaints", json!("text"))
            .await
            .assert_problem(422, "validation_failed");
        app.call(Method::PUT, &path, Some(&t), Some(json!(5)))
            .await
            .assert_problem(422, "validation_failed");

        assert_eq!(
            app.call(Method::DELETE, &path, Some(&t), None).await.status,
            204
        );
        app.get(&path, Some(&t))
            .await
            .assert_problem(404, "not_found");
        app.call(Method::DELETE, &path, Some(&t), None)
            .await
            .assert_problem(404, "not_found");
        app.get(
            "/api/v1/collections/complaints/records/not-a-uuid",
            Some(&t),
        )
        .await
        .assert_problem(404, "not_found");
        let listed = app.get("/api/v1/collections", Some(&t)).await;
        assert_eq!(
            listed.body["items"][0]["name"], "complaints",
            "created implicitly by the first write"
        );
    }
}

/// Collections list a page at a time like every other list: 50 by default,
/// by name in byte order, each exactly once across the pages.
#[tokio::test]
async fn collections_are_listed_a_page_at_a_time() {
    let app = TestApp::spawn().await;
    let staff = app.admin_token().await;
    for tier in TIERS {
        let (_, t) = tenant(&app, &staff, &format!("pages-{tier}"), "enterprise", tier).await;
        let mut names: Vec<String> = (0..52).map(|i| format!("c{i}")).collect();
        names.extend(["a_b", "a1", "ab", "z"].map(String::from));
        for name in &names {
            let res = app
                .call(
                    Method::PUT,
                    &format!("/api/v1/collections/{name}"),
                    Some(&t),
                    Some(json!({})),
                )
                .await;
            assert_eq!(res.status, 201, "{}", res.text);
        }
        names.sort();

        let first = app.get("/api/v1/collections", Some(&t)).await;
        assert_eq!(first.status, 200, "{}", first.text);
        assert_eq!(first.body["items"].as_array().map(Vec::len), Some(50));
        assert!(first.body["next_cursor"].is_string(), "{}", first.text);

        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/api/v1/collections?limit=7&cursor={c}"),
                None => "/api/v1/collections?limit=7".to_owned(),
            };
            let page = app.get(&path, Some(&t)).await;
            assert_eq!(page.status, 200, "{}", page.text);
            let items = page.body["items"].as_array().expect("items");
            assert!(items.len() <= 7);
            seen.extend(
                items
                    .iter()
                    .map(|c| c["name"].as_str().expect("name").to_owned()),
            );
            match page.body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        assert_eq!(seen, names);

        app.get("/api/v1/collections?cursor=bm90IGEgbmFtZSE", Some(&t))
            .await
            .assert_problem(422, "validation_failed");
    }
}

#[tokio::test]
async fn two_writers_with_the_same_if_match_one_wins() {
    let app = TestApp::spawn().await;
    let staff = app.admin_token().await;
    for tier in TIERS {
        let (_, t) = tenant(&app, &staff, &format!("race-{tier}"), "basic", tier).await;
        let created = post_record(&app, &t, "tickets", json!({"n": 0})).await;
        let path = format!(
            "/api/v1/collections/tickets/records/{}",
            created.body["id"].as_str().expect("id")
        );
        for round in 0..10 {
            let version = app.get(&path, Some(&t)).await.body["version"]
                .as_i64()
                .expect("version");
            let etag = format!("\"{version}\"");
            let h = [("if-match", etag.as_str())];
            let (a, b) = tokio::join!(
                app.call_with(
                    Method::PATCH,
                    &path,
                    Some(&t),
                    &h,
                    Some(json!({"n": round, "by": "a"}))
                ),
                app.call_with(
                    Method::PATCH,
                    &path,
                    Some(&t),
                    &h,
                    Some(json!({"n": round, "by": "b"}))
                ),
            );
            let mut statuses = [a.status.as_u16(), b.status.as_u16()];
            statuses.sort();
            assert_eq!(statuses, [200, 412], "round {round} on {tier}");
        }
        // Without If-Match both succeed, serialised: no update is lost.
        let (a, b) = tokio::join!(
            app.call(Method::PATCH, &path, Some(&t), Some(json!({"a": true}))),
            app.call(Method::PATCH, &path, Some(&t), Some(json!({"b": true}))),
        );
        assert_eq!((a.status.as_u16(), b.status.as_u16()), (200, 200));
        let last = app.get(&path, Some(&t)).await.body;
        assert_eq!(
            (last["data"]["a"].clone(), last["data"]["b"].clone()),
            (json!(true), json!(true))
        );
    }
}

#[tokio::test]
async fn every_filter_operator_compares_with_types() {
    let app = TestApp::spawn().await;
    let staff = app.admin_token().await;
    for tier in TIERS {
        let (_, t) = tenant(&app, &staff, &format!("filters-{tier}"), "basic", tier).await;
        let rows = [
            json!({"name": "a", "ward": 1, "code": "007", "status": "open", "addr": {"zone": "north"}}),
            json!({"name": "b", "ward": 2, "code": "7", "status": "closed", "addr": {"zone": "south"}}),
            json!({"name": "c", "ward": 10, "code": 7, "status": "open"}),
            json!({"name": "d", "ward": "10", "status": "pending"}),
            json!({"name": "e", "ward": 2.5}),
        ];
        for r in rows {
            post_record(&app, &t, "items", r).await;
        }
        let names = |q: &'static str| {
            let t = t.clone();
            let app = &app;
            async move {
                let res = app
                    .get(&format!("/api/v1/collections/items/records?{q}"), Some(&t))
                    .await;
                assert_eq!(res.status, 200, "{q}: {}", res.text);
                let mut n: Vec<String> = res.body["items"]
                    .as_array()
                    .expect("items")
                    .iter()
                    .map(|r| r["data"]["name"].as_str().expect("name").to_owned())
                    .collect();
                n.sort();
                n.join("")
            }
        };
        assert_eq!(names("filter[status]=open").await, "ac");
        assert_eq!(names("filter[status][eq]=open").await, "ac");
        assert_eq!(
            names("filter[ward]=10").await,
            "c",
            "10 is a number: the string \"10\" does not match"
        );
        assert_eq!(names("filter[ward][gte]=2").await, "bce");
        assert_eq!(names("filter[ward][lte]=2").await, "ab");
        assert_eq!(names("filter[ward][ne]=2").await, "acde");
        assert_eq!(names("filter[status][in]=closed,pending").await, "bd");
        assert_eq!(names("filter[ward][in]=1,10").await, "ac");
        assert_eq!(
            names("filter[code]=007").await,
            "a",
            "\"007\" matches only \"007\""
        );
        assert_eq!(names("filter[code]=7").await, "c");
        assert_eq!(names("filter[addr.zone]=north").await, "a");
        assert_eq!(names("filter[status]=open&filter[ward][gte]=5").await, "c");
        assert_eq!(
            names("filter[status][gte]=open").await,
            "acd",
            "strings compare as strings"
        );
        assert_eq!(
            names("filter[name]=x' OR '1'='1").await,
            "",
            "values are bound, not spliced"
        );
        for bad in [
            "filter[status][like]=x",
            "filter[bad field]=x",
            "filter[a]b=1",
            "sort=ward",
            "sort=nonsense",
            "limit=-1",
        ] {
            app.get(
                &format!("/api/v1/collections/items/records?{bad}"),
                Some(&t),
            )
            .await
            .assert_problem(422, "validation_failed");
        }
    }
}

#[tokio::test]
async fn pagination_returns_every_record_once_while_others_are_inserted() {
    let app = TestApp::spawn().await;
    let staff = app.admin_token().await;
    for tier in TIERS {
        let (_, t) = tenant(&app, &staff, &format!("pages-{tier}"), "basic", tier).await;
        let def = app
            .call(
                Method::PUT,
                "/api/v1/collections/wards",
                Some(&t),
                Some(json!({"indexed": ["population"]})),
            )
            .await;
        assert_eq!(def.status, 201, "{}", def.text);
        let again = app
            .call(
                Method::PUT,
                "/api/v1/collections/wards",
                Some(&t),
                Some(json!({"indexed": ["population"]})),
            )
            .await;
        assert_eq!(again.status, 200);
        let mut originals = Vec::new();
        for i in 0..23 {
            let r = post_record(
                &app,
                &t,
                "wards",
                json!({"n": i, "population": (i * 37) % 11}),
            )
            .await;
            originals.push(r.body["id"].as_str().expect("id").to_owned());
        }
        for sort in [
            "created_at",
            "-created_at",
            "population",
            "-population",
            "updated_at",
        ] {
            let mut seen = Vec::new();
            let mut cursor: Option<String> = None;
            let mut inserted = 0;
            loop {
                let mut path = format!("/api/v1/collections/wards/records?limit=5&sort={sort}");
                if let Some(c) = &cursor {
                    path.push_str(&format!("&cursor={c}"));
                }
                let page = app.get(&path, Some(&t)).await;
                assert_eq!(page.status, 200, "{}", page.text);
                seen.extend(ids(&page));
                // Someone inserts between our pages.
                post_record(
                    &app,
                    &t,
                    "wards",
                    json!({"n": 100 + inserted, "population": inserted % 11}),
                )
                .await;
                inserted += 1;
                match page.body["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_owned()),
                    None => break,
                }
            }
            let mut unique = seen.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(
                unique.len(),
                seen.len(),
                "{sort} on {tier}: a record appeared twice"
            );
            for id in &originals {
                assert!(
                    seen.contains(id),
                    "{sort} on {tier}: record {id} was skipped"
                );
            }
            if sort == "population" {
                let page = app
                    .get(
                        "/api/v1/collections/wards/records?limit=500&sort=population",
                        Some(&t),
                    )
                    .await;
                let pops: Vec<i64> = page.body["items"]
                    .as_array()
                    .expect("items")
                    .iter()
                    .map(|r| r["data"]["population"].as_i64().expect("pop"))
                    .collect();
                assert!(
                    pops.windows(2).all(|w| w[0] <= w[1]),
                    "sorted by population: {pops:?}"
                );
            }
        }
        // A cursor from another sort is refused.
        let page = app
            .get(
                "/api/v1/collections/wards/records?limit=2&sort=population",
                Some(&t),
            )
            .await;
        let c = page.body["next_cursor"].as_str().expect("cursor");
        app.get(
            &format!("/api/v1/collections/wards/records?limit=2&cursor={c}"),
            Some(&t),
        )
        .await
        .assert_problem(422, "validation_failed");
    }
}

#[tokio::test]
async fn schemas_and_unique_fields_are_enforced_per_tenant() {
    let app = TestApp::spawn().await;
    let staff = app.admin_token().await;
    let schema = json!({"type": "object", "required": ["title", "status"],
                        "properties": {"title": {"type": "string", "minLength": 3},
                                       "status": {"enum": ["open", "resolved"]}}});
    let (_, other) = tenant(&app, &staff, "uniq-other", "basic", "shared").await;
    for tier in TIERS {
        let (_, t) = tenant(&app, &staff, &format!("schema-{tier}"), "basic", tier).await;
        let def = app
            .call(
                Method::PUT,
                "/api/v1/collections/complaints",
                Some(&t),
                Some(json!({"schema": schema, "unique": ["ref"], "indexed": ["status"]})),
            )
            .await;
        assert_eq!(def.status, 201, "{}", def.text);
        let bad = post_record(
            &app,
            &t,
            "complaints",
            json!({"title": "x", "status": "lost"}),
        )
        .await;
        bad.assert_problem(422, "validation_failed");
        let fields: Vec<&str> = bad.body["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .filter_map(|e| e["field"].as_str())
            .collect();
        assert!(
            fields.contains(&"title") && fields.contains(&"status"),
            "{fields:?}"
        );
        post_record(&app, &t, "complaints", json!({"status": "open"}))
            .await
            .assert_problem(422, "validation_failed");

        let first = post_record(
            &app,
            &t,
            "complaints",
            json!({"title": "Streetlight", "status": "open", "ref": "C-1"}),
        )
        .await;
        assert_eq!(first.status, 201, "{}", first.text);
        post_record(
            &app,
            &t,
            "complaints",
            json!({"title": "Other", "status": "open", "ref": "C-1"}),
        )
        .await
        .assert_problem(409, "conflict");
        // Unique within the tenant, not across tenants.
        assert_eq!(
            post_record(&app, &other, "complaints", json!({"ref": "C-1"}))
                .await
                .status,
            201
        );
        // Changing the value frees the old one.
        let path = format!(
            "/api/v1/collections/complaints/records/{}",
            first.body["id"].as_str().expect("id")
        );
        assert_eq!(
            app.call(Method::PATCH, &path, Some(&t), Some(json!({"ref": "C-2"})))
                .await
                .status,
            200
        );
        assert_eq!(
            post_record(
                &app,
                &t,
                "complaints",
                json!({"title": "Third", "status": "open", "ref": "C-1"})
            )
            .await
            .status,
            201
        );
        app.call(
            Method::PATCH,
            &path,
            Some(&t),
            Some(json!({"status": "bogus"})),
        )
        .await
        .assert_problem(422, "validation_failed");
        // Bad definitions.
        for body in [
            json!({"schema": {"type": 12}}),
            json!({"unique": ["bad field"]}),
            json!({"indexed": ["x;drop"]}),
        ] {
            app.call(
                Method::PUT,
                "/api/v1/collections/complaints",
                Some(&t),
                Some(body),
            )
            .await
            .assert_problem(422, "validation_failed");
        }
        app.call(
            Method::PUT,
            "/api/v1/collections/Bad-Name",
            Some(&t),
            Some(json!({})),
        )
        .await
        .assert_problem(422, "validation_failed");
        // Declaring a unique field that existing records already break.
        post_record(&app, &t, "dupes", json!({"k": 1})).await;
        post_record(&app, &t, "dupes", json!({"k": 1})).await;
        app.call(
            Method::PUT,
            "/api/v1/collections/dupes",
            Some(&t),
            Some(json!({"unique": ["k"]})),
        )
        .await
        .assert_problem(409, "conflict");
    }
}

#[tokio::test]
async fn collections_need_admins_to_define_and_features_to_use() {
    let app = TestApp::spawn().await;
    let staff = app.admin_token().await;
    let (_, basic) = tenant(&app, &staff, "feat-basic", "basic", "shared").await;
    let (_, ent) = tenant(&app, &staff, "feat-ent", "enterprise", "dedicated").await;
    let (_, user) = app
        .tenant_user(&staff, "feat-basic", "u@feat.example", "user")
        .await;
    app.call(
        Method::PUT,
        "/api/v1/collections/notes",
        Some(&user),
        Some(json!({})),
    )
    .await
    .assert_problem(403, "forbidden");
    assert_eq!(
        post_record(&app, &user, "notes", json!({"x": 1}))
            .await
            .status,
        201,
        "users write records"
    );
    for t in [&basic, &ent] {
        let def = app
            .call(
                Method::PUT,
                "/api/v1/collections/insights",
                Some(t),
                Some(json!({"required_feature": "ai_verification"})),
            )
            .await;
        assert_eq!(def.status, 201, "{}", def.text);
    }
    post_record(&app, &basic, "insights", json!({"x": 1}))
        .await
        .assert_problem(403, "feature_not_enabled");
    app.get("/api/v1/collections/insights/records", Some(&basic))
        .await
        .assert_problem(403, "feature_not_enabled");
    assert_eq!(
        post_record(&app, &ent, "insights", json!({"x": 1}))
            .await
            .status,
        201
    );
}

#[tokio::test]
async fn storage_quota_refuses_writes_past_the_plan() {
    let app = TestApp::spawn().await;
    let staff = app.admin_token().await;
    let tiny = json!({"name": "Tiny", "limits": {"max_users": 10, "max_storage_bytes": 200, "api_requests_per_day": null,
                      "requests_per_second": 100}});
    app.call(Method::PUT, "/api/v1/plans/tiny", Some(&staff), Some(tiny))
        .await;
    for tier in TIERS {
        let slug = format!("quota-{tier}");
        let (tenant_json, t) = tenant(&app, &staff, &slug, "tiny", tier).await;
        let body = json!({"text": "x".repeat(80)});
        let size = body.to_string().len() as u64;
        let first = post_record(&app, &t, "notes", body.clone()).await;
        assert_eq!(first.status, 201);
        assert_eq!(
            post_record(&app, &t, "notes", body.clone()).await.status,
            201
        );
        post_record(&app, &t, "notes", body.clone())
            .await
            .assert_problem(403, "quota_exceeded");
        let usage = app
            .get(
                &format!(
                    "/api/v1/tenants/{}/usage",
                    tenant_json["id"].as_str().expect("id")
                ),
                Some(&staff),
            )
            .await;
        assert_eq!(usage.status, 200, "{}", usage.text);
        assert_eq!(usage.body["records"], 2);
        assert_eq!(usage.body["storage_bytes"], 2 * size);
        assert_eq!(usage.body["users"], 1);
        assert_eq!(usage.body["limits"]["max_storage_bytes"], 200);
        // Growing a record past the quota is refused too; deleting frees space.
        let path = format!(
            "/api/v1/collections/notes/records/{}",
            first.body["id"].as_str().expect("id")
        );
        app.call(
            Method::PUT,
            &path,
            Some(&t),
            Some(json!({"text": "y".repeat(150)})),
        )
        .await
        .assert_problem(403, "quota_exceeded");
        app.call(Method::DELETE, &path, Some(&t), None).await;
        assert_eq!(post_record(&app, &t, "notes", body).await.status, 201);
    }
}

/// Storage counts bytes, not characters: rewriting a record of multi-byte
/// text leaves the usage at its size (it once grew with each rewrite on
/// SQLite, where `length()` counts characters, until a false quota_exceeded).
#[tokio::test]
async fn storage_of_non_ascii_records_stays_exact_across_rewrites() {
    let app = TestApp::spawn().await;
    let staff = app.admin_token().await;
    for tier in TIERS {
        let slug = format!("utf8-{tier}");
        let (tenant_json, t) = tenant(&app, &staff, &slug, "basic", tier).await;
        let body = json!({"text": "é日本語🙂".repeat(20)});
        let bytes = body.to_string().len() as u64;
        assert!(bytes > body.to_string().chars().count() as u64);
        let first = post_record(&app, &t, "notes", body.clone()).await;
        assert_eq!(first.status, 201, "{}", first.text);
        let path = format!(
            "/api/v1/collections/notes/records/{}",
            first.body["id"].as_str().expect("id")
        );
        for _ in 0..5 {
            let res = app
                .call(Method::PUT, &path, Some(&t), Some(body.clone()))
                .await;
            assert_eq!(res.status, 200, "{}", res.text);
        }
        let usage = app
            .get(
                &format!(
                    "/api/v1/tenants/{}/usage",
                    tenant_json["id"].as_str().expect("id")
                ),
                Some(&staff),
            )
            .await;
        assert_eq!(usage.body["storage_bytes"], bytes, "{tier}: {}", usage.text);
    }
}

#[tokio::test]
async fn stats_group_by_and_cross_tenant_comparison() {
    let app = TestApp::spawn().await;
    let staff = app.admin_token().await;
    let org = app
        .post(
            "/api/v1/organizations",
            Some(&staff),
            json!({"name": "State"}),
        )
        .await
        .body;
    let mut tokens = Vec::new();
    for (slug, statuses) in [
        ("north", vec!["resolved", "resolved", "open", "closed"]),
        ("south", vec!["open", "open", "resolved"]),
        ("east", vec!["resolved"]),
    ] {
        let tier = if slug == "south" {
            "dedicated"
        } else {
            "shared"
        };
        app.post(
            "/api/v1/tenants",
            Some(&staff),
            json!({"name": slug, "slug": slug, "isolation": tier, "organization_id": org["id"]}),
        )
        .await;
        let (_, t) = app
            .tenant_user(&staff, slug, &format!("a@{slug}.example"), "admin")
            .await;
        for s in statuses {
            post_record(&app, &t, "complaints", json!({"status": s, "ward": 3})).await;
        }
        tokens.push(t);
    }
    let stats = app
        .get(
            "/api/v1/collections/complaints/stats?group_by=status",
            Some(&tokens[0]),
        )
        .await;
    assert_eq!(stats.status, 200, "{}", stats.text);
    assert_eq!(
        stats.body,
        json!({"total": 4, "groups": {"resolved": 2, "open": 1, "closed": 1}})
    );
    let by_ward = app
        .get(
            "/api/v1/collections/complaints/stats?group_by=ward",
            Some(&tokens[1]),
        )
        .await;
    assert_eq!(by_ward.body, json!({"total": 3, "groups": {"3": 3}}));
    app.get("/api/v1/collections/complaints/stats", Some(&tokens[0]))
        .await
        .assert_problem(422, "validation_failed");

    let cmp = app
        .get("/api/v1/analytics/compare?collection=complaints&group_by=status&resolved=resolved,closed", Some(&staff))
        .await;
    assert_eq!(cmp.status, 200, "{}", cmp.text);
    let rows: Vec<(String, u64, u64, f64)> = cmp
        .body
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["tenant"]["slug"].as_str().expect("slug").to_owned(),
                r["total"].as_u64().expect("t"),
                r["resolved"].as_u64().expect("r"),
                r["resolution_rate"].as_f64().expect("rate"),
            )
        })
        .collect();
    assert_eq!(rows[0], ("east".into(), 1, 1, 100.0));
    assert_eq!(rows[1], ("north".into(), 4, 3, 75.0));
    assert_eq!(rows[2].0, "south");
    assert!((rows[2].3 - 33.33).abs() < 0.01);
    // Org admins compare their organization only; tenant users not at all.
    app.post(
        &format!(
            "/api/v1/organizations/{}/admins",
            org["id"].as_str().expect("id")
        ),
        Some(&staff),
        json!({"email": "oa@state.example", "password": "Org-Passw0rd!", "name": "OA"}),
    )
    .await;
    app.create_tenant(&staff, "outsider", "basic").await;
    let oa = app.login("oa@state.example", "Org-Passw0rd!").await.body["access_token"]
        .as_str()
        .expect("t")
        .to_owned();
    let cmp = app
        .get(
            "/api/v1/analytics/compare?collection=complaints&group_by=status&resolved=resolved",
            Some(&oa),
        )
        .await;
    assert_eq!(cmp.body.as_array().map(Vec::len), Some(3));
    let all = app
        .get(
            "/api/v1/analytics/compare?collection=complaints&group_by=status&resolved=resolved",
            Some(&staff),
        )
        .await;
    assert_eq!(
        all.body.as_array().map(Vec::len),
        Some(4),
        "super-admins see every tenant"
    );
    app.get(
        "/api/v1/analytics/compare?collection=complaints&group_by=status&resolved=resolved",
        Some(&tokens[0]),
    )
    .await
    .assert_problem(403, "forbidden");
}

#[tokio::test]
async fn dedicated_storage_exists_from_creation_and_vanishes_on_purge() {
    let app = TestApp::spawn().await;
    let staff = app.admin_token().await;
    let (t, token) = tenant(&app, &staff, "ded", "enterprise", "dedicated").await;
    let id = t["id"].as_str().expect("id");
    assert!(
        app.dedicated_storage_exists(id).await,
        "created before the 201"
    );
    post_record(&app, &token, "x", json!({"a": 1})).await;
    let (s, shared_token) = tenant(&app, &staff, "shr", "basic", "shared").await;
    post_record(
        &app,
        &shared_token,
        "x",
        json!({"secret": "shared-tenant-data"}),
    )
    .await;
    assert_eq!(
        app.call(Method::DELETE, "/api/v1/tenants/ded", Some(&staff), None)
            .await
            .status,
        204
    );
    assert!(
        !app.dedicated_storage_exists(id).await,
        "purged with the tenant"
    );
    assert_eq!(
        app.call(Method::DELETE, "/api/v1/tenants/shr", Some(&staff), None)
            .await
            .status,
        204
    );
    // The slug is free again and the new tenant starts empty.
    let (_, fresh) = tenant(&app, &staff, "shr", "basic", "shared").await;
    let listed = app.get("/api/v1/collections/x/records", Some(&fresh)).await;
    assert_eq!(listed.body["items"], json!([]));
    let _ = s;
}

#[tokio::test]
async fn everything_survives_a_restart() {
    let app = TestApp::spawn().await;
    let staff = app.admin_token().await;
    let mut before = Vec::new();
    for tier in TIERS {
        let (_, t) = tenant(&app, &staff, &format!("keep-{tier}"), "basic", tier).await;
        app.call(
            Method::PUT,
            "/api/v1/collections/c",
            Some(&t),
            Some(json!({"unique": ["k"]})),
        )
        .await;
        let r = post_record(&app, &t, "c", json!({"k": tier})).await;
        before.push((tier, r.body["id"].as_str().expect("id").to_owned()));
    }
    let dir = app.stop().await;
    let app = TestApp::spawn_with(dir, |_| {}).await;
    let staff = app.admin_token().await;
    for (tier, id) in before {
        let slug = format!("keep-{tier}");
        let login = app
            .tenant_login(
                &slug,
                &format!("admin@{slug}.example"),
                crate::support::USER_PASSWORD,
            )
            .await;
        let t = login.body["access_token"]
            .as_str()
            .expect("token")
            .to_owned();
        let got = app
            .get(&format!("/api/v1/collections/c/records/{id}"), Some(&t))
            .await;
        assert_eq!(got.body["data"]["k"], tier);
        post_record(&app, &t, "c", json!({"k": tier}))
            .await
            .assert_problem(409, "conflict");
        let usage = app
            .get(&format!("/api/v1/tenants/{slug}/usage"), Some(&staff))
            .await;
        assert_eq!(usage.body["records"], 1);
    }
}
