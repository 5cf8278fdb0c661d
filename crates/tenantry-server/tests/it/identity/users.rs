//! Tenant users and roles: who may manage whom, quotas and the password
//! policy, org admins inside their organization.

use super::{id, world};
use crate::support::{ADMIN_PASSWORD, USER_PASSWORD};
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn each_role_may_do_exactly_its_user_management_actions() {
    let w = world().await;
    let app = &w.app;
    let (_, manager) = app
        .tenant_user(&w.staff, "acme", "manager@acme.example", "manager")
        .await;
    let (plain_user, user) = app
        .tenant_user(&w.staff, "acme", "user@acme.example", "user")
        .await;
    let actors = [
        ("super_admin", w.staff.clone()),
        ("admin", w.admin_a.clone()),
        ("manager", manager),
        ("user", user),
    ];
    let hdr = [("x-tenant-slug", "acme")];
    let mut n = 0;
    for (who, token) in &actors {
        let t = Some(token.as_str());
        // Fresh targets for each actor.
        let target_user = app
            .call_with(Method::POST, "/api/v1/users", Some(&w.staff), &hdr,
                Some(json!({"email": format!("tu{n}@acme.example"), "password": USER_PASSWORD, "name": "T", "role": "user"})))
            .await
            .body;
        let target_mgr = app
            .call_with(Method::POST, "/api/v1/users", Some(&w.staff), &hdr,
                Some(json!({"email": format!("tm{n}@acme.example"), "password": USER_PASSWORD, "name": "M", "role": "manager"})))
            .await
            .body;
        n += 1;
        let mut outcome = Vec::new();
        for role in ["user", "manager", "admin"] {
            let res = app
                .call_with(Method::POST, "/api/v1/users", t, &hdr,
                    Some(json!({"email": format!("new-{role}-{n}@acme.example"), "password": USER_PASSWORD, "name": "N", "role": role})))
                .await;
            outcome.push((format!("create {role}"), res.status.as_u16()));
        }
        outcome.push((
            "list".into(),
            app.call_with(Method::GET, "/api/v1/users", t, &hdr, None)
                .await
                .status
                .as_u16(),
        ));
        let uid = id(&target_user);
        let mid = id(&target_mgr);
        let get = |path: String| async move {
            app.call_with(Method::GET, &path, t, &hdr, None)
                .await
                .status
                .as_u16()
        };
        outcome.push(("get user".into(), get(format!("/api/v1/users/{uid}")).await));
        let patch = |path: String, body: Value| async move {
            app.call_with(Method::PATCH, &path, t, &hdr, Some(body))
                .await
                .status
                .as_u16()
        };
        outcome.push((
            "rename user".into(),
            patch(format!("/api/v1/users/{uid}"), json!({"name": "R"})).await,
        ));
        outcome.push((
            "promote user".into(),
            patch(format!("/api/v1/users/{uid}"), json!({"role": "manager"})).await,
        ));
        outcome.push((
            "rename manager".into(),
            patch(format!("/api/v1/users/{mid}"), json!({"name": "R"})).await,
        ));
        outcome.push((
            "delete manager".into(),
            app.call_with(
                Method::DELETE,
                &format!("/api/v1/users/{mid}"),
                t,
                &hdr,
                None,
            )
            .await
            .status
            .as_u16(),
        ));
        let delete_user = app
            .call_with(
                Method::DELETE,
                &format!("/api/v1/users/{uid}"),
                t,
                &hdr,
                None,
            )
            .await
            .status
            .as_u16();
        outcome.push(("delete user".into(), delete_user));

        let expected: &[u16] = match *who {
            //                     create u/m/a     list get  ren  promo renM delM delU
            "super_admin" | "admin" => &[201, 201, 201, 200, 200, 200, 200, 200, 204, 204],
            "manager" => &[201, 403, 403, 200, 200, 200, 403, 403, 403, 204],
            "user" => &[403, 403, 403, 403, 403, 403, 403, 403, 403, 403],
            _ => unreachable!(),
        };
        let got: Vec<u16> = outcome.iter().map(|(_, s)| *s).collect();
        assert_eq!(got, expected, "{who}: {outcome:?}");
    }
    // Everyone may read and change themselves (name, password), not their role.
    let (me, token) = app
        .tenant_user(&w.staff, "acme", "self@acme.example", "user")
        .await;
    let me_path = format!("/api/v1/users/{}", id(&me));
    assert_eq!(
        app.call(Method::GET, &me_path, Some(&token), None)
            .await
            .status,
        200
    );
    assert_eq!(
        app.call(
            Method::PATCH,
            &me_path,
            Some(&token),
            Some(json!({"name": "Me"}))
        )
        .await
        .status,
        200
    );
    app.call(
        Method::PATCH,
        &me_path,
        Some(&token),
        Some(json!({"role": "admin"})),
    )
    .await
    .assert_problem(403, "forbidden");
    let _ = plain_user;
}

#[tokio::test]
async fn users_are_unique_per_tenant_quota_bound_and_policy_checked() {
    let w = world().await;
    let app = &w.app;
    let create = |tenant: &'static str, email: &'static str, password: &'static str| {
        let staff = w.staff.clone();
        async move {
            app.call_with(
                Method::POST,
                "/api/v1/users",
                Some(&staff),
                &[("x-tenant-slug", tenant)],
                Some(json!({"email": email, "password": password, "name": "X"})),
            )
            .await
        }
    };
    assert_eq!(
        create("acme", "Same@Example.com", USER_PASSWORD)
            .await
            .status,
        201
    );
    create("acme", "same@example.COM", USER_PASSWORD)
        .await
        .assert_problem(409, "conflict");
    assert_eq!(
        create("beta", "same@example.com", USER_PASSWORD)
            .await
            .status,
        201,
        "another tenant may reuse it"
    );
    for (bad, rule) in [
        ("Sh0rt!", "at least"),
        ("nouppercase-123", "uppercase"),
        ("NoDigits-Here", "digit"),
    ] {
        let res = create("acme", "weak@example.com", bad).await;
        res.assert_problem(422, "validation_failed");
        assert_eq!(res.body["errors"][0]["field"], "password");
        assert!(
            res.body["errors"][0]["message"]
                .as_str()
                .unwrap_or("")
                .contains(rule),
            "{}",
            res.text
        );
    }
    // A stricter tenant policy applies to password changes too.
    app.call(
        Method::PUT,
        "/api/v1/tenants/acme/config/security.password_policy",
        Some(&w.staff),
        Some(json!({"value": {"min_length": 20}})),
    )
    .await;
    let res = create("acme", "long@example.com", USER_PASSWORD).await;
    res.assert_problem(422, "validation_failed");
    // The plan's user quota.
    let gold = json!({"name": "Tiny", "limits": {"max_users": 2, "max_storage_bytes": 1000, "api_requests_per_day": 100,
                      "requests_per_second": 5}});
    app.call(
        Method::PUT,
        "/api/v1/plans/tiny",
        Some(&w.staff),
        Some(gold),
    )
    .await;
    app.create_tenant(&w.staff, "tiny-co", "tiny").await;
    assert_eq!(
        create("tiny-co", "one@example.com", USER_PASSWORD)
            .await
            .status,
        201
    );
    assert_eq!(
        create("tiny-co", "two@example.com", USER_PASSWORD)
            .await
            .status,
        201
    );
    create("tiny-co", "three@example.com", USER_PASSWORD)
        .await
        .assert_problem(403, "quota_exceeded");
    // Another tenant's user id is a 404, never a 403.
    let beta_user = create("beta", "other@example.com", USER_PASSWORD)
        .await
        .body;
    app.get(
        &format!("/api/v1/users/{}", id(&beta_user)),
        Some(&w.admin_a),
    )
    .await
    .assert_problem(404, "not_found");
    app.call(
        Method::DELETE,
        &format!("/api/v1/users/{}", id(&beta_user)),
        Some(&w.admin_a),
        None,
    )
    .await
    .assert_problem(404, "not_found");
}

#[tokio::test]
async fn org_admins_act_only_inside_their_organization_and_are_audited() {
    let w = world().await;
    let app = &w.app;
    let org = app
        .post(
            "/api/v1/organizations",
            Some(&w.staff),
            json!({"name": "Group"}),
        )
        .await
        .body;
    let org_id = id(&org);
    app.post(
        "/api/v1/tenants",
        Some(&w.staff),
        json!({"name": "G1", "slug": "g-one", "organization_id": org_id}),
    )
    .await;
    let admin = app
        .post(
            &format!("/api/v1/organizations/{org_id}/admins"),
            Some(&w.staff),
            json!({"email": "oa@group.example", "password": ADMIN_PASSWORD, "name": "OA"}),
        )
        .await;
    assert_eq!(admin.status, 201, "{}", admin.text);
    assert_eq!(admin.body["role"], "org_admin");
    let oa_login = app.login("oa@group.example", ADMIN_PASSWORD).await;
    let oa = oa_login.body["access_token"]
        .as_str()
        .expect("token")
        .to_owned();

    let res = app
        .call_with(
            Method::GET,
            "/api/v1/users",
            Some(&oa),
            &[("x-tenant-slug", "g-one")],
            None,
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    app.call_with(
        Method::GET,
        "/api/v1/users",
        Some(&oa),
        &[("x-tenant-slug", "acme")],
        None,
    )
    .await
    .assert_problem(404, "tenant_not_found");
    app.get("/api/v1/tenants/acme", Some(&oa))
        .await
        .assert_problem(404, "tenant_not_found");

    // Both the org admin's and the super-admin's accesses are in the tenant's audit chain.
    app.call_with(
        Method::GET,
        "/api/v1/users",
        Some(&w.staff),
        &[("x-tenant-slug", "g-one")],
        None,
    )
    .await;
    let services = &app.app_state.services;
    let tenant = services
        .core
        .find_tenant("g-one")
        .await
        .expect("lookup")
        .expect("tenant");
    let only_reads = tenantry::audit::AuditFilter {
        action: Some("staff_access.get".into()),
        ..Default::default()
    };
    let entries = services
        .core
        .store
        .list_audit(Some(&tenant), &only_reads, 0, 100)
        .await
        .expect("audit")
        .into_iter()
        .map(|(_, e)| e)
        .collect::<Vec<_>>();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].actor_scope, format!("organization:{org_id}"));
    assert_eq!(entries[0].action, "staff_access.get");
    assert_eq!(entries[0].resource, "/api/v1/users");
    assert_eq!(entries[1].actor_scope, "platform");
    assert_eq!(
        entries[1].prev_hash.as_deref(),
        Some(entries[0].hash.as_str())
    );
    let verified = services
        .tenants
        .verify_tenant_chains(&tenant)
        .await
        .expect("verify");
    assert!(verified.valid, "{verified:?}");
    // Only super-admins add org admins.
    app.post(
        &format!("/api/v1/organizations/{org_id}/admins"),
        Some(&oa),
        json!({"email": "x@group.example", "password": ADMIN_PASSWORD, "name": "X"}),
    )
    .await
    .assert_problem(403, "forbidden");
}
