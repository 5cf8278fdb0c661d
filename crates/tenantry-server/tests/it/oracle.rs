//! The isolation oracle: random operations by random users of several
//! tenants on both tiers, attacks included, checked against a model of what
//! each tenant owns. No response may carry another tenant's data; foreign
//! ids are 404; each tenant ends with exactly the model's records.
//!
//! Seeded: `TENANTRY_ORACLE_SEED` replays a run, `TENANTRY_ORACLE_OPS` sets its length.

use crate::support::{Res, TestApp};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeMap;

struct Tenant {
    slug: String,
    id: String,
    tokens: Vec<String>,
    /// record id → (collection, data)
    model: BTreeMap<String, (String, Value)>,
}

/// How a request forges a tenant: its name, path and headers.
type Forgery<'a> = (&'a str, String, Vec<(&'a str, &'a str)>);

const COLLECTIONS: [&str; 2] = ["complaints", "wards"];

fn secret_of(slug: &str) -> String {
    format!("secret-of-{slug}")
}

/// No other tenant's marker may appear in a response seen by `me`.
#[track_caller]
fn assert_clean(res: &Res, me: &str, all: &[String], op: &str) {
    for other in all.iter().filter(|s| s.as_str() != me) {
        assert!(
            !res.text.contains(&secret_of(other)),
            "{op}: {me} saw data of {other}: {}",
            res.text
        );
    }
}

#[tokio::test]
async fn isolation_oracle_random_operations_and_attacks_on_both_tiers() {
    let seed: u64 = std::env::var("TENANTRY_ORACLE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().r#gen());
    let ops: usize = std::env::var("TENANTRY_ORACLE_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400);
    eprintln!("isolation oracle: seed {seed}, {ops} operations");
    let mut rng = StdRng::seed_from_u64(seed);

    let app = TestApp::spawn().await;
    let staff = app.admin_token().await;
    let mut tenants = Vec::new();
    for (i, tier) in ["shared", "dedicated", "shared", "dedicated"]
        .into_iter()
        .enumerate()
    {
        let slug = format!("oracle-{i}");
        let t = app
            .post(
                "/api/v1/tenants",
                Some(&staff),
                json!({"name": slug, "slug": slug, "plan": "enterprise", "isolation": tier}),
            )
            .await;
        assert_eq!(t.status, 201);
        let mut tokens = Vec::new();
        for role in ["admin", "manager", "user"] {
            tokens.push(
                app.tenant_user(&staff, &slug, &format!("{role}@{slug}.example"), role)
                    .await
                    .1,
            );
        }
        app.call_with(
            Method::PUT,
            "/api/v1/collections/wards",
            Some(&tokens[0]),
            &[],
            Some(json!({"unique": ["code"], "indexed": ["n"]})),
        )
        .await;
        tenants.push(Tenant {
            slug,
            id: t.body["id"].as_str().expect("id").to_owned(),
            tokens,
            model: BTreeMap::new(),
        });
    }
    let slugs: Vec<String> = tenants.iter().map(|t| t.slug.clone()).collect();
    let mut counter = 0u64;

    for step in 0..ops {
        let me = rng.gen_range(0..tenants.len());
        let other = (me + rng.gen_range(1..tenants.len())) % tenants.len();
        let token = tenants[me].tokens.choose(&mut rng).expect("token").clone();
        let t = Some(token.as_str());
        let my_slug = tenants[me].slug.clone();
        let foreign_id = tenants[other]
            .model
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .choose(&mut rng)
            .cloned();
        let own = tenants[me]
            .model
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Vec<_>>()
            .choose(&mut rng)
            .cloned();
        let coll = *COLLECTIONS.choose(&mut rng).expect("collection");
        let op = rng.gen_range(0..12);
        let label = format!("step {step} op {op} by {my_slug}");
        match op {
            // Create, with another tenant's id planted in the data.
            0..=2 => {
                counter += 1;
                let data = json!({"owner": my_slug, "n": counter, "code": format!("c{counter}"),
                                  "secret": secret_of(&my_slug), "tenant_id": tenants[other].id});
                let res = app
                    .call_with(
                        Method::POST,
                        &format!("/api/v1/collections/{coll}/records"),
                        t,
                        &[],
                        Some(data.clone()),
                    )
                    .await;
                assert_eq!(res.status, 201, "{label}: {}", res.text);
                assert_clean(&res, &my_slug, &slugs, &label);
                tenants[me].model.insert(
                    res.body["id"].as_str().expect("id").to_owned(),
                    (coll.to_owned(), data),
                );
            }
            // Read an own record: exactly the model's data.
            3 => {
                if let Some((id, (c, data))) = own {
                    let res = app
                        .call_with(
                            Method::GET,
                            &format!("/api/v1/collections/{c}/records/{id}"),
                            t,
                            &[],
                            None,
                        )
                        .await;
                    assert_eq!(res.status, 200, "{label}");
                    assert_eq!(res.body["data"], data, "{label}");
                }
            }
            // Every verb on another tenant's record id: 404, nothing changes.
            4 => {
                if let Some(id) = &foreign_id {
                    let (c, _) = tenants[other].model[id].clone();
                    let path = format!("/api/v1/collections/{c}/records/{id}");
                    for (method, body) in [
                        (Method::GET, None),
                        (Method::PUT, Some(json!({"hijacked": true}))),
                        (Method::PATCH, Some(json!({"hijacked": true}))),
                        (Method::DELETE, None),
                    ] {
                        let res = app.call_with(method.clone(), &path, t, &[], body).await;
                        res.assert_problem(404, "not_found");
                        assert_clean(&res, &my_slug, &slugs, &label);
                    }
                }
            }
            // Forged tenant indicators: refused, never served.
            5 => {
                let o = &tenants[other];
                let forged: [Forgery; 3] = [
                    (
                        "x-tenant-id",
                        format!("/api/v1/collections/{coll}/records"),
                        vec![("x-tenant-id", o.id.as_str())],
                    ),
                    (
                        "x-tenant-slug",
                        format!("/api/v1/collections/{coll}/records"),
                        vec![("x-tenant-slug", o.slug.as_str())],
                    ),
                    (
                        "query",
                        format!("/api/v1/collections/{coll}/records?tenant={}", o.slug),
                        vec![],
                    ),
                ];
                for (how, path, headers) in forged {
                    let res = app.call_with(Method::GET, &path, t, &headers, None).await;
                    res.assert_problem(403, "tenant_mismatch");
                    assert_clean(&res, &my_slug, &slugs, &format!("{label} forged {how}"));
                    let res = app
                        .call_with(
                            Method::POST,
                            &path,
                            t,
                            &headers,
                            Some(json!({"planted": true})),
                        )
                        .await;
                    res.assert_problem(403, "tenant_mismatch");
                }
            }
            // A filter naming another tenant's values finds nothing of theirs.
            6 => {
                let o = &tenants[other].slug;
                let res = app
                    .call_with(
                        Method::GET,
                        &format!("/api/v1/collections/{coll}/records?filter[owner]={o}"),
                        t,
                        &[],
                        None,
                    )
                    .await;
                assert_eq!(res.status, 200, "{label}");
                assert_eq!(res.body["items"], json!([]), "{label}");
                assert_clean(&res, &my_slug, &slugs, &label);
            }
            // A cursor taken from another tenant's list pages only over mine.
            7 => {
                let other_token = tenants[other].tokens[0].clone();
                let theirs = app
                    .call_with(
                        Method::GET,
                        &format!("/api/v1/collections/{coll}/records?limit=1"),
                        Some(&other_token),
                        &[],
                        None,
                    )
                    .await;
                if let Some(cursor) = theirs.body["next_cursor"].as_str() {
                    let res = app
                        .call_with(
                            Method::GET,
                            &format!("/api/v1/collections/{coll}/records?limit=50&cursor={cursor}"),
                            t,
                            &[],
                            None,
                        )
                        .await;
                    assert_eq!(res.status, 200, "{label}");
                    assert_clean(&res, &my_slug, &slugs, &label);
                    for item in res.body["items"].as_array().expect("items") {
                        assert_eq!(item["data"]["owner"], my_slug.as_str(), "{label}");
                    }
                }
            }
            // Patch an own record.
            8 => {
                if let Some((id, (c, mut data))) = own {
                    let res = app
                        .call_with(
                            Method::PATCH,
                            &format!("/api/v1/collections/{c}/records/{id}"),
                            t,
                            &[],
                            Some(json!({"touched": step})),
                        )
                        .await;
                    assert_eq!(res.status, 200, "{label}: {}", res.text);
                    data["touched"] = json!(step);
                    tenants[me].model.insert(id, (c, data));
                }
            }
            // Delete an own record.
            9 => {
                if let Some((id, (c, _))) = own {
                    let res = app
                        .call_with(
                            Method::DELETE,
                            &format!("/api/v1/collections/{c}/records/{id}"),
                            t,
                            &[],
                            None,
                        )
                        .await;
                    assert_eq!(res.status, 204, "{label}");
                    tenants[me].model.remove(&id);
                }
            }
            // Unique values are per tenant: reuse another tenant's code.
            10 => {
                if let Some(id) = &foreign_id {
                    let (_, theirs) = tenants[other].model[id].clone();
                    counter += 1;
                    let data = json!({"owner": my_slug, "n": counter, "code": theirs["code"], "secret": secret_of(&my_slug)});
                    let res = app
                        .call_with(
                            Method::POST,
                            "/api/v1/collections/wards/records",
                            t,
                            &[],
                            Some(data.clone()),
                        )
                        .await;
                    let taken_here = tenants[me]
                        .model
                        .values()
                        .any(|(c, d)| c == "wards" && d["code"] == theirs["code"]);
                    if taken_here {
                        res.assert_problem(409, "conflict");
                    } else {
                        assert_eq!(res.status, 201, "{label}: {}", res.text);
                        tenants[me].model.insert(
                            res.body["id"].as_str().expect("id").to_owned(),
                            ("wards".into(), data),
                        );
                    }
                }
            }
            // Stats see only my records.
            _ => {
                let res = app
                    .call_with(
                        Method::GET,
                        &format!("/api/v1/collections/{coll}/stats?group_by=owner"),
                        t,
                        &[],
                        None,
                    )
                    .await;
                let mine = tenants[me]
                    .model
                    .values()
                    .filter(|(c, _)| c == coll)
                    .count() as u64;
                assert_eq!(res.body["total"], mine, "{label}");
                if mine > 0 {
                    assert_eq!(
                        res.body["groups"],
                        json!({my_slug.clone(): mine}),
                        "{label}"
                    );
                }
            }
        }
    }

    // Each tenant's final contents equal the model, exactly.
    for t in &tenants {
        let mut actual = BTreeMap::new();
        for coll in COLLECTIONS {
            let mut cursor = String::new();
            loop {
                let res = app
                    .call_with(
                        Method::GET,
                        &format!("/api/v1/collections/{coll}/records?limit=37&cursor={cursor}"),
                        Some(&t.tokens[0]),
                        &[],
                        None,
                    )
                    .await;
                assert_clean(&res, &t.slug, &slugs, "final listing");
                for item in res.body["items"].as_array().expect("items") {
                    actual.insert(
                        item["id"].as_str().expect("id").to_owned(),
                        (coll.to_owned(), item["data"].clone()),
                    );
                }
                match res.body["next_cursor"].as_str() {
                    Some(c) => cursor = c.to_owned(),
                    None => break,
                }
            }
        }
        assert_eq!(actual, t.model, "tenant {} (seed {seed})", t.slug);
    }
}
