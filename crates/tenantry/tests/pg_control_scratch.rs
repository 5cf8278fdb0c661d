//! Temporary checks of PgControlStore (to be deleted).
#![allow(clippy::unwrap_used)]

use chrono::{Duration as CDuration, NaiveDate, Utc};
use serde_json::json;
use sqlx::{Connection, PgConnection};
use std::sync::Arc;
use std::time::Duration;
use tenantry::audit::{NewAuditEntry, first_broken};
use tenantry::ids::{OrgId, TenantId, UserId};
use tenantry::plan::Plan;
use tenantry::store::postgres::{PgControlStore, PgDatabase, PgSettings};
use tenantry::store::{
    ConfigEntry, ControlStore, IdentityStore, Organization, OtpRecord, PageRequest, PlatformUser,
    RefreshRecord, StoreError, TenantFilter, TenantUser,
};
use tenantry::tenant::{Isolation, Slug, TenantStatus};
use tenantry::{Role, Tenant};
use uuid::Uuid;

fn tenant(slug: &str, name: &str) -> Tenant {
    Tenant {
        id: TenantId::new(),
        slug: Slug::parse(slug).unwrap(),
        name: name.into(),
        plan: "basic".into(),
        status: TenantStatus::Active,
        isolation: Isolation::Shared,
        organization_id: None,
        domain: None,
        metadata: json!({"a": 1}),
        branding: json!({"color": "red"}),
        created_at: Utc::now(),
        updated_at: Utc::now(),
    }
}

fn user(email: Option<&str>, phone: Option<&str>) -> TenantUser {
    TenantUser {
        id: UserId::new(),
        email: email.map(str::to_owned),
        name: "u".into(),
        role: Role::User,
        phone: phone.map(str::to_owned),
        password_hash: Some("h".into()),
        active: true,
        created_at: Utc::now(),
        updated_at: Utc::now(),
    }
}

fn page(after: Option<Uuid>, limit: u32) -> PageRequest {
    PageRequest { after, limit }
}

fn audit(action: &str) -> NewAuditEntry {
    NewAuditEntry {
        actor: "a".into(),
        actor_scope: "platform".into(),
        action: action.into(),
        resource: "r".into(),
        request_id: Some("req".into()),
    }
}

fn conflict(e: StoreError) -> String {
    match e {
        StoreError::Conflict(f) => f,
        other => panic!("expected conflict, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn control_and_identity() {
    let name = format!("scratch_ctl_{}", Uuid::new_v4().simple());
    let db = PgDatabase::open(&PgSettings {
        url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
        runtime_role: "tenantry_app".into(),
        runtime_password: None,
        max_connections: 4,
        acquire_timeout: Duration::from_secs(5),
    })
    .await
    .unwrap();
    let store = Arc::new(PgControlStore::new(db.clone()));
    let result = tokio::spawn(run(store.clone(), name.clone())).await;
    db.close().await;
    let mut admin = PgConnection::connect("postgres://postgres@127.0.0.1:5432/postgres")
        .await
        .unwrap();
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
    result.unwrap();
}

async fn run(s: Arc<PgControlStore>, dbname: String) {
    s.ping().await.unwrap();

    // Plans.
    s.seed_plans(&Plan::builtin()).await.unwrap();
    let plans = s.list_plans().await.unwrap();
    let codes: Vec<_> = plans.iter().map(|p| p.code.clone()).collect();
    let mut sorted = codes.clone();
    sorted.sort();
    assert_eq!(codes, sorted);
    assert_eq!(plans.len(), Plan::builtin().len());
    let mut basic = s.plan("basic").await.unwrap().unwrap();
    assert_eq!(
        basic,
        Plan::builtin()
            .into_iter()
            .find(|p| p.code == "basic")
            .unwrap()
    );
    assert!(s.plan("nope").await.unwrap().is_none());
    basic.name = "Edited".into();
    assert!(!s.upsert_plan(&basic).await.unwrap());
    let mut newp = basic.clone();
    newp.code = "zzz".into();
    assert!(s.upsert_plan(&newp).await.unwrap());
    s.seed_plans(&Plan::builtin()).await.unwrap();
    assert_eq!(s.plan("basic").await.unwrap().unwrap().name, "Edited");

    // Platform users & orgs.
    let org = Organization {
        id: OrgId::new(),
        name: "Org".into(),
        description: Some("d".into()),
        created_at: Utc::now(),
    };
    s.insert_org(&org).await.unwrap();
    assert_eq!(conflict(s.insert_org(&org).await.unwrap_err()), "id");
    let got = s.org(org.id).await.unwrap().unwrap();
    assert_eq!(got.id, org.id);
    assert_eq!(got.description, org.description);
    assert!(
        (got.created_at - org.created_at)
            .num_microseconds()
            .unwrap()
            .abs()
            < 1
    );
    let mut orgs = vec![org.id];
    for i in 0..4 {
        let o = Organization {
            id: OrgId::new(),
            name: format!("o{i}"),
            description: None,
            created_at: Utc::now(),
        };
        s.insert_org(&o).await.unwrap();
        orgs.push(o.id);
    }
    let p1 = s.list_orgs(None, &page(None, 2)).await.unwrap();
    let p2 = s.list_orgs(None, &page(Some(p1[1].id.0), 2)).await.unwrap();
    let p3 = s.list_orgs(None, &page(Some(p2[1].id.0), 2)).await.unwrap();
    let all: Vec<_> = p1.iter().chain(&p2).chain(&p3).map(|o| o.id).collect();
    assert_eq!(all, orgs);
    assert_eq!(
        s.list_orgs(Some(orgs[2]), &page(None, 10))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(s.list_orgs(None, &page(None, 0)).await.unwrap().len(), 1);

    let admin = PlatformUser {
        id: UserId::new(),
        email: "Boss@Example.com".into(),
        name: "b".into(),
        password_hash: "x".into(),
        role: Role::SuperAdmin,
        organization_id: None,
        created_at: Utc::now(),
    };
    s.insert_platform_user(&admin).await.unwrap();
    let mut dup = admin.clone();
    dup.id = UserId::new();
    dup.email = "boss@example.COM".into();
    assert_eq!(
        conflict(s.insert_platform_user(&dup).await.unwrap_err()),
        "email"
    );
    let mut dup2 = admin.clone();
    dup2.email = "other@x".into();
    assert_eq!(
        conflict(s.insert_platform_user(&dup2).await.unwrap_err()),
        "email"
    );
    let oa = PlatformUser {
        id: UserId::new(),
        email: "oa@x".into(),
        name: "oa".into(),
        password_hash: "x".into(),
        role: Role::OrgAdmin,
        organization_id: Some(org.id),
        created_at: Utc::now(),
    };
    s.insert_platform_user(&oa).await.unwrap();
    let got = s
        .platform_user_by_email("BOSS@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.id, admin.id);
    assert_eq!(got.role, Role::SuperAdmin);
    let got = s.platform_user(oa.id).await.unwrap().unwrap();
    assert_eq!(got.organization_id, Some(org.id));
    assert_eq!(got.role, Role::OrgAdmin);
    assert!(s.platform_user(UserId::new()).await.unwrap().is_none());
    assert_eq!(s.count_super_admins().await.unwrap(), 1);

    // Tenants.
    let mut t1 = tenant("alpha", "Alpha 100% Corp");
    t1.domain = Some("alpha.example".into());
    t1.organization_id = Some(org.id);
    s.insert_tenant(&t1, b"key1").await.unwrap();
    let mut t2 = tenant("beta", "Beta_Thing");
    t2.plan = "premium".into();
    s.insert_tenant(&t2, b"key2").await.unwrap();
    let t3 = tenant("gamma", "Gamma");
    s.insert_tenant(&t3, b"key3").await.unwrap();
    let mut dupslug = tenant("alpha", "x");
    assert_eq!(
        conflict(s.insert_tenant(&dupslug, b"k").await.unwrap_err()),
        "slug"
    );
    dupslug.slug = Slug::parse("alpha2").unwrap();
    dupslug.domain = Some("alpha.example".into());
    assert_eq!(
        conflict(s.insert_tenant(&dupslug, b"k").await.unwrap_err()),
        "domain"
    );
    assert!(
        s.tenant_by_slug("alpha2").await.unwrap().is_none(),
        "rolled back"
    );
    let mut badplan = tenant("delta", "x");
    badplan.plan = "nope".into();
    assert!(matches!(
        s.insert_tenant(&badplan, b"k").await.unwrap_err(),
        StoreError::Internal(_)
    ));

    let got = s.tenant_by_id(t1.id).await.unwrap().unwrap();
    assert_eq!(got.slug.as_str(), "alpha");
    assert_eq!(got.metadata, json!({"a": 1}));
    assert_eq!(got.organization_id, Some(org.id));
    assert_eq!(s.tenant_by_slug("beta").await.unwrap().unwrap().id, t2.id);
    assert_eq!(
        s.tenant_by_domain("alpha.example")
            .await
            .unwrap()
            .unwrap()
            .id,
        t1.id
    );
    assert!(s.tenant_by_domain("ALPHA.example").await.unwrap().is_none());
    assert_eq!(s.tenant_wrapped_key(&t2).await.unwrap(), b"key2");

    let ids = |v: Vec<Tenant>| v.into_iter().map(|t| t.id).collect::<Vec<_>>();
    let all = |f: TenantFilter| {
        let s = s.clone();
        async move { ids(s.list_tenants(&f, &page(None, 100)).await.unwrap()) }
    };
    assert_eq!(
        all(TenantFilter::default()).await,
        vec![t1.id, t2.id, t3.id]
    );
    assert_eq!(
        all(TenantFilter {
            plan: Some("premium".into()),
            ..Default::default()
        })
        .await,
        vec![t2.id]
    );
    assert_eq!(
        all(TenantFilter {
            organization_id: Some(org.id),
            ..Default::default()
        })
        .await,
        vec![t1.id]
    );
    assert_eq!(
        all(TenantFilter {
            q: Some("100%".into()),
            ..Default::default()
        })
        .await,
        vec![t1.id]
    );
    assert_eq!(
        all(TenantFilter {
            q: Some("%".into()),
            ..Default::default()
        })
        .await,
        vec![t1.id]
    );
    assert_eq!(
        all(TenantFilter {
            q: Some("_".into()),
            ..Default::default()
        })
        .await,
        vec![t2.id]
    );
    assert_eq!(
        all(TenantFilter {
            q: Some("a_t".into()),
            ..Default::default()
        })
        .await,
        vec![t2.id]
    );
    assert_eq!(
        all(TenantFilter {
            q: Some("GAMMA".into()),
            ..Default::default()
        })
        .await,
        vec![t3.id]
    );
    assert_eq!(
        all(TenantFilter {
            q: Some("ALP".into()),
            ..Default::default()
        })
        .await,
        vec![t1.id]
    );
    assert_eq!(
        all(TenantFilter {
            q: Some("\\".into()),
            ..Default::default()
        })
        .await,
        vec![]
    );
    let p1 = s
        .list_tenants(&TenantFilter::default(), &page(None, 2))
        .await
        .unwrap();
    let p2 = s
        .list_tenants(&TenantFilter::default(), &page(Some(p1[1].id.0), 2))
        .await
        .unwrap();
    assert_eq!(
        ids(p1).into_iter().chain(ids(p2)).collect::<Vec<_>>(),
        vec![t1.id, t2.id, t3.id]
    );

    let mut upd = t3.clone();
    upd.name = "Gamma 2".into();
    upd.slug = Slug::parse("gamma-two").unwrap();
    upd.status = TenantStatus::Suspended; // ignored
    upd.metadata = json!({"x": [1, 2]});
    s.update_tenant(&upd).await.unwrap();
    let got = s.tenant_by_id(t3.id).await.unwrap().unwrap();
    assert_eq!(got.name, "Gamma 2");
    assert_eq!(got.status, TenantStatus::Active);
    assert_eq!(got.metadata, json!({"x": [1, 2]}));
    let mut clash = upd.clone();
    clash.slug = Slug::parse("alpha").unwrap();
    assert_eq!(conflict(s.update_tenant(&clash).await.unwrap_err()), "slug");
    s.set_tenant_status(&t3, TenantStatus::Suspended)
        .await
        .unwrap();
    assert_eq!(
        s.tenant_by_id(t3.id).await.unwrap().unwrap().status,
        TenantStatus::Suspended
    );
    assert_eq!(
        all(TenantFilter {
            status: Some(TenantStatus::Suspended),
            ..Default::default()
        })
        .await,
        vec![t3.id]
    );
    assert!(matches!(
        s.update_tenant(&tenant("nobody", "n")).await.unwrap_err(),
        StoreError::NotFound
    ));

    // Config.
    let entry = |k: &str, v| ConfigEntry {
        key: k.into(),
        value: v,
        encrypted: false,
        updated_at: Utc::now(),
    };
    s.put_config(&t1, &entry("b", json!({"n": 1})))
        .await
        .unwrap();
    s.put_config(&t1, &entry("a", json!("s"))).await.unwrap();
    s.put_config(&t2, &entry("a", json!(2))).await.unwrap();
    let mut enc = entry("b", json!("sealed"));
    enc.encrypted = true;
    s.put_config(&t1, &enc).await.unwrap();
    let list = s.list_config(&t1).await.unwrap();
    assert_eq!(
        list.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
        vec!["a", "b"]
    );
    assert_eq!(list[1].value, json!("sealed"));
    assert!(list[1].encrypted);
    assert_eq!(s.config(&t2, "a").await.unwrap().unwrap().value, json!(2));
    assert!(s.config(&t2, "b").await.unwrap().is_none());
    assert!(s.delete_config(&t1, "a").await.unwrap());
    assert!(!s.delete_config(&t1, "a").await.unwrap());
    assert_eq!(s.list_config(&t1).await.unwrap().len(), 1);

    // Request counts.
    let d = |n| NaiveDate::from_ymd_opt(2025, 1, n).unwrap();
    s.add_request_counts(&[(t1.id, d(1), 5), (t2.id, d(1), 7), (t1.id, d(2), 1)])
        .await
        .unwrap();
    s.add_request_counts(&[(t1.id, d(1), 10), (t1.id, d(5), u64::MAX)])
        .await
        .unwrap();
    s.add_request_counts(&[]).await.unwrap();
    assert_eq!(
        s.request_counts(&t1, d(1), d(4)).await.unwrap(),
        vec![(d(1), 15), (d(2), 1)]
    );
    assert_eq!(
        s.request_counts(&t2, d(1), d(31)).await.unwrap(),
        vec![(d(1), 7)]
    );
    assert_eq!(
        s.request_counts(&t1, d(5), d(5)).await.unwrap(),
        vec![(d(5), i64::MAX as u64)]
    );

    // Users.
    let u1 = user(Some("Ann@X.com"), Some("+100"));
    s.insert_user(&t1, &u1, Some(3)).await.unwrap();
    assert_eq!(
        conflict(
            s.insert_user(&t1, &user(Some("ann@x.COM"), None), None)
                .await
                .unwrap_err()
        ),
        "email"
    );
    assert_eq!(
        conflict(
            s.insert_user(&t1, &user(None, Some("+100")), None)
                .await
                .unwrap_err()
        ),
        "phone"
    );
    s.insert_user(&t2, &user(Some("ann@x.com"), Some("+100")), None)
        .await
        .unwrap();
    let u2 = user(None, Some("+200"));
    s.insert_user(&t1, &u2, Some(3)).await.unwrap();
    let u3 = user(Some("c@x"), None);
    s.insert_user(&t1, &u3, Some(3)).await.unwrap();
    assert!(matches!(
        s.insert_user(&t1, &user(Some("d@x"), None), Some(3))
            .await
            .unwrap_err(),
        StoreError::QuotaExceeded
    ));
    assert_eq!(s.count_users(&t1).await.unwrap(), 3);
    assert_eq!(s.count_users(&t2).await.unwrap(), 1);
    let got = s.user(&t1, u1.id).await.unwrap().unwrap();
    assert_eq!(got.email.as_deref(), Some("Ann@X.com"));
    assert!(s.user(&t2, u1.id).await.unwrap().is_none());
    assert_eq!(
        s.user_by_email(&t1, "ANN@x.com").await.unwrap().unwrap().id,
        u1.id
    );
    assert_eq!(
        s.user_by_phone(&t1, "+200").await.unwrap().unwrap().id,
        u2.id
    );
    assert!(s.user_by_phone(&t3, "+200").await.unwrap().is_none());
    let l1 = s.list_users(&t1, &page(None, 2)).await.unwrap();
    let l2 = s.list_users(&t1, &page(Some(l1[1].id.0), 2)).await.unwrap();
    assert_eq!(l1.len(), 2);
    assert_eq!(l2.len(), 1);
    let listed: Vec<_> = l1.iter().chain(&l2).map(|u| u.id).collect();
    assert_eq!(listed, vec![u1.id, u2.id, u3.id]);
    let mut u2b = s.user(&t1, u2.id).await.unwrap().unwrap();
    u2b.email = Some("new@x".into());
    u2b.active = false;
    u2b.role = Role::Manager;
    s.update_user(&t1, &u2b).await.unwrap();
    let got = s.user(&t1, u2.id).await.unwrap().unwrap();
    assert_eq!(got, u2b);
    u2b.email = Some("ANN@x.com".into());
    assert_eq!(
        conflict(s.update_user(&t1, &u2b).await.unwrap_err()),
        "email"
    );
    s.update_user(&t1, &user(Some("ghost@x"), None))
        .await
        .unwrap(); // no-op, like SQLite

    // Refresh tokens.
    let fam = Uuid::now_v7();
    let rec = |h: &str, tenant: Option<TenantId>, uid: UserId| RefreshRecord {
        token_hash: h.into(),
        family_id: fam,
        tenant_id: tenant,
        user_id: uid,
        expires_at: Utc::now() + CDuration::days(1),
        used_at: None,
        revoked_at: None,
    };
    s.insert_refresh(&rec("h1", Some(t1.id), u1.id))
        .await
        .unwrap();
    s.insert_refresh(&rec("h2", Some(t1.id), u1.id))
        .await
        .unwrap();
    s.insert_refresh(&rec("h3", None, admin.id)).await.unwrap();
    assert_eq!(
        conflict(
            s.insert_refresh(&rec("h1", None, admin.id))
                .await
                .unwrap_err()
        ),
        "hash"
    );
    let got = s.refresh_by_hash("h1").await.unwrap().unwrap();
    assert_eq!(got.tenant_id, Some(t1.id));
    assert_eq!(got.family_id, fam);
    assert!(
        s.refresh_by_hash("h3")
            .await
            .unwrap()
            .unwrap()
            .tenant_id
            .is_none()
    );
    let now = Utc::now();
    let (a, b) = tokio::join!(s.spend_refresh("h1", now), s.spend_refresh("h1", now));
    assert!(a.unwrap() ^ b.unwrap());
    assert!(
        s.refresh_by_hash("h1")
            .await
            .unwrap()
            .unwrap()
            .used_at
            .is_some()
    );
    s.revoke_family(fam, now).await.unwrap();
    assert!(!s.spend_refresh("h2", now).await.unwrap());
    assert!(
        s.refresh_by_hash("h3")
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some()
    );
    // delete_user drops its tokens.
    assert!(s.delete_user(&t1, u1.id).await.unwrap());
    assert!(!s.delete_user(&t1, u1.id).await.unwrap());
    assert!(s.refresh_by_hash("h1").await.unwrap().is_none());
    assert!(s.refresh_by_hash("h2").await.unwrap().is_none());
    assert!(s.refresh_by_hash("h3").await.unwrap().is_some());
    assert_eq!(s.count_users(&t1).await.unwrap(), 2);

    // OTP.
    let otp = OtpRecord {
        phone: "+300".into(),
        code_hash: "c1".into(),
        expires_at: Utc::now() + CDuration::minutes(5),
        attempts: 0,
    };
    s.put_otp(&t1, &otp).await.unwrap();
    assert_eq!(s.otp(&t1, "+300").await.unwrap().unwrap().code_hash, "c1");
    assert!(s.otp(&t2, "+300").await.unwrap().is_none());
    let mut handles = Vec::new();
    for _ in 0..10 {
        let s = s.clone();
        let t = t1.clone();
        handles.push(tokio::spawn(async move {
            s.spend_otp_attempt(&t, "+300", 3).await
        }));
    }
    let mut spent = Vec::new();
    for h in handles {
        if let Some(r) = h.await.unwrap().unwrap() {
            spent.push(r.attempts);
        }
    }
    spent.sort();
    assert_eq!(spent, vec![1, 2, 3]);
    assert!(s.spend_otp_attempt(&t1, "+300", 3).await.unwrap().is_none());
    assert!(
        s.spend_otp_attempt(&t1, "+nope", 3)
            .await
            .unwrap()
            .is_none()
    );
    s.put_otp(&t1, &otp).await.unwrap();
    assert_eq!(s.otp(&t1, "+300").await.unwrap().unwrap().attempts, 0);
    let r = s.spend_otp_attempt(&t1, "+300", 3).await.unwrap().unwrap();
    assert_eq!((r.attempts, r.code_hash.as_str()), (1, "c1"));
    assert!(!s.consume_otp(&t1, "+300", "wrong").await.unwrap());
    let (a, b) = tokio::join!(
        s.consume_otp(&t1, "+300", "c1"),
        s.consume_otp(&t1, "+300", "c1")
    );
    assert!(a.unwrap() ^ b.unwrap());
    assert!(s.otp(&t1, "+300").await.unwrap().is_none());
    s.put_otp(&t1, &otp).await.unwrap();
    s.delete_otp(&t1, "+300").await.unwrap();
    assert!(s.otp(&t1, "+300").await.unwrap().is_none());

    // Audit chain, concurrently.
    let first = s.append_audit(&t1, audit("first")).await.unwrap();
    assert!(first.prev_hash.is_none());
    let mut handles = Vec::new();
    for i in 0..24 {
        let s = s.clone();
        let t = if i % 3 == 0 { t2.clone() } else { t1.clone() };
        handles.push(tokio::spawn(async move {
            s.append_audit(&t, audit(&format!("a{i}"))).await
        }));
    }
    for h in handles {
        h.await.unwrap().unwrap();
    }
    let log1 = s.list_audit(&t1, &page(None, 1000)).await.unwrap();
    let log2 = s.list_audit(&t2, &page(None, 1000)).await.unwrap();
    assert_eq!(log1.len(), 17);
    assert_eq!(log2.len(), 8);
    assert_eq!(log1[0], first);
    assert_eq!(first_broken(&log1), None);
    assert_eq!(first_broken(&log2), None);
    assert!(log1.iter().all(|e| e.tenant_id == t1.id));
    let a1 = s.list_audit(&t1, &page(None, 5)).await.unwrap();
    let a2 = s.list_audit(&t1, &page(Some(a1[4].id), 5)).await.unwrap();
    assert_eq!(a1[..], log1[..5]);
    assert_eq!(a2[..], log1[5..10]);

    // Concurrent sign-ups cannot overshoot max_users.
    let t4 = tenant("delta", "Delta");
    s.insert_tenant(&t4, b"k4").await.unwrap();
    let mut handles = Vec::new();
    for i in 0..20 {
        let s = s.clone();
        let t = t4.clone();
        handles.push(tokio::spawn(async move {
            s.insert_user(&t, &user(Some(&format!("u{i}@x")), None), Some(5))
                .await
        }));
    }
    let mut ok = 0;
    for h in handles {
        match h.await.unwrap() {
            Ok(()) => ok += 1,
            Err(StoreError::QuotaExceeded) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(ok, 5);
    assert_eq!(s.count_users(&t4).await.unwrap(), 5);

    // Purge.
    let t1_before = s.tenant_by_id(t1.id).await.unwrap().unwrap();
    s.insert_refresh(&rec("h9", Some(t1.id), u3.id))
        .await
        .unwrap();
    s.put_otp(&t1, &otp).await.unwrap();
    s.purge_tenant(&t1_before).await.unwrap();
    assert!(s.tenant_by_id(t1.id).await.unwrap().is_none());
    assert!(s.tenant_by_domain("alpha.example").await.unwrap().is_none());
    assert!(matches!(
        s.tenant_wrapped_key(&t1).await.unwrap_err(),
        StoreError::Internal(_)
    ));
    assert_eq!(s.count_users(&t1).await.unwrap(), 0);
    assert!(s.list_config(&t1).await.unwrap().is_empty());
    assert!(s.request_counts(&t1, d(1), d(31)).await.unwrap().is_empty());
    assert!(s.otp(&t1, "+300").await.unwrap().is_none());
    assert!(s.refresh_by_hash("h9").await.unwrap().is_none());
    assert_eq!(
        s.list_audit(&t1, &page(None, 1000)).await.unwrap().len(),
        18 - 1
    );
    let deleted = s
        .list_tenants(
            &TenantFilter {
                status: Some(TenantStatus::Deleted),
                ..Default::default()
            },
            &page(None, 10),
        )
        .await
        .unwrap();
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0].metadata, json!({}));
    assert_eq!(deleted[0].branding, json!({}));
    assert!(deleted[0].domain.is_none());
    assert!(deleted[0].updated_at > t1_before.updated_at);
    assert!(matches!(
        s.update_tenant(&t1_before).await.unwrap_err(),
        StoreError::NotFound
    ));
    assert!(matches!(
        s.set_tenant_status(&t1_before, TenantStatus::Active)
            .await
            .unwrap_err(),
        StoreError::NotFound
    ));
    // Slug and domain are free again.
    let mut again = tenant("alpha", "Alpha again");
    again.domain = Some("alpha.example".into());
    s.insert_tenant(&again, b"k").await.unwrap();
    // Other tenants untouched.
    assert_eq!(s.count_users(&t2).await.unwrap(), 1);
    assert_eq!(s.config(&t2, "a").await.unwrap().unwrap().value, json!(2));

    // RLS really applies: the runtime role outside a tenant transaction sees nothing.
    let mut rt = PgConnection::connect(&format!("postgres://tenantry_app@127.0.0.1:5432/{dbname}"))
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&mut rt)
        .await
        .unwrap();
    assert_eq!(n, 0);
    let mut sup = PgConnection::connect(&format!("postgres://postgres@127.0.0.1:5432/{dbname}"))
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&mut sup)
        .await
        .unwrap();
    assert_eq!(n, 1 + 2 - 2 + 5 + 1 - 1, "t2:1, t1:0, t4:5");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE tenant_id = $1")
        .bind(t1.id.0)
        .fetch_one(&mut sup)
        .await
        .unwrap();
    assert_eq!(n, 17);
    // No connection was left inside a transaction or with a tenant set.
    let idle_in_tx: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND state LIKE 'idle in transaction%'",
    )
    .bind(&dbname)
    .fetch_one(&mut sup)
    .await
    .unwrap();
    assert_eq!(idle_in_tx, 0);
    rt.close().await.unwrap();
    sup.close().await.unwrap();
}
