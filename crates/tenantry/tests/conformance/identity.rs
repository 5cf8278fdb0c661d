//! Tenant users, refresh tokens and the control chain.

use crate::engine::{Engine, audit};
use chrono::{Duration, Utc};
use futures::future::join_all;
use tenantry::Role;
use tenantry::audit::{AuditFilter, ChainCheck};
use tenantry::ids::UserId;
use tenantry::store::{RefreshRecord, StoreError, TenantUser};
use tenantry::tenant::Isolation;
use uuid::Uuid;

crate::on_both_engines!(
    max_users_holds_among_concurrent_sign_ups,
    an_email_is_held_by_one_user_per_tenant,
    a_refresh_token_is_spent_once,
    concurrent_appends_keep_the_control_chain_linked,
);

fn user(email: &str) -> TenantUser {
    let now = Utc::now();
    TenantUser {
        id: UserId::new(),
        email: Some(email.to_owned()),
        name: email.to_owned(),
        role: Role::User,
        phone: None,
        password_hash: Some("not a real hash".to_owned()),
        active: true,
        created_at: now,
        updated_at: now,
    }
}

async fn max_users_holds_among_concurrent_sign_ups(engine: Engine) {
    let tenant = engine.tenant("signups", Isolation::Shared).await;
    let sign_ups = (0..10).map(|n| {
        let store = engine.store.clone();
        let tenant = tenant.clone();
        async move {
            let u = user(&format!("u{n}@example.com"));
            store
                .insert_user(&tenant, &u, Some(3), &audit("user.create"))
                .await
        }
    });
    let results = join_all(sign_ups).await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        3,
        "{results:?}"
    );
    assert!(
        results
            .iter()
            .all(|r| r.is_ok() || *r == Err(StoreError::QuotaExceeded)),
        "{results:?}"
    );
    assert_eq!(engine.store.count_users(&tenant).await, Ok(3));
}

async fn an_email_is_held_by_one_user_per_tenant(engine: Engine) {
    let a = engine.tenant("emails-a", Isolation::Shared).await;
    let b = engine.tenant("emails-b", Isolation::Shared).await;
    let store = &engine.store;
    let ada = user("ada@example.com");
    store
        .insert_user(&a, &ada, None, &audit("user.create"))
        .await
        .expect("insert");
    let twin = store
        .insert_user(&a, &user("ada@example.com"), None, &audit("user.create"))
        .await;
    assert_eq!(twin, Err(StoreError::Conflict("email".into())));
    store
        .insert_user(&b, &user("ada@example.com"), None, &audit("user.create"))
        .await
        .expect("another tenant may have the same address");
    let found = store
        .user_by_email(&a, "ada@example.com")
        .await
        .expect("lookup");
    assert_eq!(found.map(|u| u.id), Some(ada.id));
    assert_eq!(
        store.user(&b, ada.id).await,
        Ok(None),
        "ids do not cross tenants"
    );
}

async fn a_refresh_token_is_spent_once(engine: Engine) {
    let tenant = engine.tenant("refresh", Isolation::Shared).await;
    let ada = user("ada@example.com");
    let store = &engine.store;
    store
        .insert_user(&tenant, &ada, None, &audit("user.create"))
        .await
        .expect("insert");
    let token = RefreshRecord {
        token_hash: "hash-1".into(),
        family_id: Uuid::now_v7(),
        tenant_id: Some(tenant.id),
        user_id: ada.id,
        expires_at: Utc::now() + Duration::hours(1),
        used_at: None,
        revoked_at: None,
    };
    store.insert_refresh(&token, None).await.expect("insert");
    let spends = (0..8).map(|_| {
        let store = engine.store.clone();
        async move { store.spend_refresh("hash-1", Utc::now()).await }
    });
    let results = join_all(spends).await;
    assert_eq!(
        results.iter().filter(|r| **r == Ok(true)).count(),
        1,
        "{results:?}"
    );
    assert!(results.iter().all(Result::is_ok), "{results:?}");

    // The family is revoked: its next token is refused.
    store
        .revoke_family(token.family_id, Utc::now())
        .await
        .expect("revoke");
    let next = RefreshRecord {
        token_hash: "hash-2".into(),
        ..token.clone()
    };
    assert_eq!(
        store.insert_refresh(&next, Some("hash-1")).await,
        Err(StoreError::NotFound)
    );
}

async fn concurrent_appends_keep_the_control_chain_linked(engine: Engine) {
    let tenant = engine.tenant("control-chain", Isolation::Shared).await;
    let appends = (0..12).map(|n| {
        let store = engine.store.clone();
        let tenant = tenant.clone();
        let on = if n % 3 == 0 { None } else { Some(tenant) };
        async move { store.append_audit(on.as_ref(), &audit("user.login")).await }
    });
    assert!(join_all(appends).await.iter().all(Result::is_ok));
    for (chain, appended) in [(Some(&tenant), 8), (None, 4)] {
        let entries = engine
            .store
            .list_audit(
                chain,
                &AuditFilter {
                    action: Some("user.login".into()),
                    ..AuditFilter::default()
                },
                0,
                100,
            )
            .await
            .expect("list");
        assert_eq!(entries.len(), appended);
        let all = engine
            .store
            .list_audit(chain, &AuditFilter::default(), 0, 1000)
            .await
            .expect("list");
        let mut check = ChainCheck::default();
        all.iter().for_each(|(_, e)| check.feed(e));
        assert_eq!(check.first_broken, None, "{chain:?}");
        assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "seqs ascend");
    }
}
