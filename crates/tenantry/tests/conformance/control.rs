//! Tenants, their configuration and request counts in the control store.

use crate::engine::{Engine, audit};
use chrono::{Duration, Utc};
use futures::future::join_all;
use serde_json::json;
use tenantry::job::{Job, JobKind};
use tenantry::store::{ConfigEntry, PageRequest, StoreError, TenantChange, TenantFilter};
use tenantry::tenant::{Isolation, TenantStatus};

crate::on_both_engines!(
    a_slug_is_held_by_one_live_tenant,
    lookups_see_live_tenants_and_a_deletion_frees_the_slug,
    concurrent_changes_of_different_fields_all_take_effect,
    config_entries_are_kept_per_tenant,
    request_counts_add_up_across_concurrent_batches,
);

async fn a_slug_is_held_by_one_live_tenant(engine: Engine) {
    let first = engine.tenant("acme", Isolation::Shared).await;
    let mut twin = first.clone();
    twin.id = tenantry::TenantId::new();
    let refused = engine
        .store
        .insert_tenant(&twin, b"key", &audit("tenant.create"))
        .await;
    assert_eq!(refused, Err(StoreError::Conflict("slug".into())));

    let other = engine.tenant("globex", Isolation::Shared).await;
    let change = TenantChange {
        slug: Some(first.slug.clone()),
        updated_at: Utc::now(),
        ..TenantChange::default()
    };
    let refused = engine
        .store
        .change_tenant(other.id, &change, &audit("tenant.update"))
        .await;
    assert_eq!(
        refused.map(|t| t.slug),
        Err(StoreError::Conflict("slug".into()))
    );
}

async fn lookups_see_live_tenants_and_a_deletion_frees_the_slug(engine: Engine) {
    let tenant = engine.tenant("initech", Isolation::Shared).await;
    let store = &engine.store;
    store
        .set_tenant_status(
            &tenant,
            TenantStatus::Suspended,
            Utc::now(),
            &audit("tenant.suspend"),
        )
        .await
        .expect("suspend");
    let found = store.tenant_by_slug("initech").await.expect("lookup");
    assert_eq!(
        found.map(|t| t.status),
        Some(TenantStatus::Suspended),
        "suspended is live"
    );

    let purge = Job::queued(
        tenant.id,
        JobKind::Delete,
        json!({}),
        "conformance",
        None,
        Utc::now(),
    );
    store
        .mark_tenant_deleting(&tenant, &purge, &audit("tenant.delete"))
        .await
        .expect("mark deleting");
    assert_eq!(store.tenant_by_slug("initech").await.expect("lookup"), None);
    assert_eq!(store.tenant_by_id(tenant.id).await.expect("lookup"), None);
    let any = store.tenant_any(tenant.id).await.expect("lookup");
    assert_eq!(any.map(|t| t.status), Some(TenantStatus::Deleting));
    let again = store
        .mark_tenant_deleting(&tenant, &purge, &audit("tenant.delete"))
        .await;
    assert_eq!(
        again,
        Err(StoreError::NotFound),
        "only a live tenant is deleted"
    );

    let successor = engine.tenant("initech", Isolation::Shared).await;
    // Listings show a deletion under way until the purge has finished.
    let listed = || async {
        let filter = TenantFilter {
            q: Some("INITECH".into()),
            ..TenantFilter::default()
        };
        let page = PageRequest {
            after: None,
            limit: 10,
        };
        let tenants = store.list_tenants(&filter, &page).await.expect("list");
        tenants
            .into_iter()
            .map(|t| (t.id, t.status))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        listed().await,
        vec![
            (tenant.id, TenantStatus::Deleting),
            (successor.id, TenantStatus::Active)
        ]
    );
    engine.data.purge(&tenant).await.expect("purge data");
    store
        .purge_tenant(&tenant, &audit("tenant.purge"))
        .await
        .expect("purge");
    assert_eq!(listed().await, vec![(successor.id, TenantStatus::Active)]);
    let any = store.tenant_any(tenant.id).await.expect("lookup");
    assert_eq!(
        any.map(|t| t.status),
        Some(TenantStatus::Deleted),
        "a tombstone stays"
    );
}

async fn concurrent_changes_of_different_fields_all_take_effect(engine: Engine) {
    let tenant = engine.tenant("hooli", Isolation::Shared).await;
    let changes = (0..6).map(|n| {
        let store = engine.store.clone();
        let change = if n % 2 == 0 {
            TenantChange {
                name: Some(format!("Hooli {n}")),
                updated_at: Utc::now(),
                ..TenantChange::default()
            }
        } else {
            TenantChange {
                metadata: Some(json!({ "writer": n })),
                updated_at: Utc::now(),
                ..TenantChange::default()
            }
        };
        async move {
            store
                .change_tenant(tenant.id, &change, &audit("tenant.update"))
                .await
        }
    });
    assert!(join_all(changes).await.iter().all(Result::is_ok));
    let after = engine
        .store
        .tenant_by_id(tenant.id)
        .await
        .expect("lookup")
        .expect("live");
    assert!(after.name.starts_with("Hooli "), "{}", after.name);
    assert!(after.metadata["writer"].is_number(), "{}", after.metadata);
    assert_eq!(
        after.status,
        TenantStatus::Active,
        "a change leaves the status alone"
    );
}

async fn config_entries_are_kept_per_tenant(engine: Engine) {
    let a = engine.tenant("umbrella", Isolation::Shared).await;
    let b = engine.tenant("cyberdyne", Isolation::Dedicated).await;
    let store = &engine.store;
    let entry = |key: &str, value: serde_json::Value| ConfigEntry {
        key: key.to_owned(),
        value,
        encrypted: false,
        updated_at: Utc::now(),
    };
    store
        .put_config(&a, &entry("theme", json!("dark")), &audit("config.put"))
        .await
        .expect("put");
    store
        .put_config(&a, &entry("theme", json!("light")), &audit("config.put"))
        .await
        .expect("replace");
    store
        .put_config(&a, &entry("limit", json!(3)), &audit("config.put"))
        .await
        .expect("put");
    let theme = store
        .config(&a, "theme")
        .await
        .expect("get")
        .map(|e| e.value);
    assert_eq!(theme, Some(json!("light")));
    assert_eq!(
        store.config(&b, "theme").await.expect("get"),
        None,
        "another tenant's"
    );
    let keys: Vec<String> = store
        .list_config(&a)
        .await
        .expect("list")
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(
        !store
            .delete_config(&b, "theme", &audit("config.delete"))
            .await
            .expect("delete")
    );
    assert!(
        store
            .delete_config(&a, "theme", &audit("config.delete"))
            .await
            .expect("delete")
    );
    assert!(
        !store
            .delete_config(&a, "theme", &audit("config.delete"))
            .await
            .expect("delete")
    );
}

async fn request_counts_add_up_across_concurrent_batches(engine: Engine) {
    let a = engine.tenant("stark", Isolation::Shared).await;
    let b = engine.tenant("wayne", Isolation::Shared).await;
    let today = Utc::now().date_naive();
    let yesterday = today - Duration::days(1);
    let batches = (0..8u64).map(|n| {
        let store = engine.store.clone();
        let rows = vec![(a.id, today, n + 1), (b.id, yesterday, 2)];
        async move { store.add_request_counts(&rows).await }
    });
    let answers = join_all(batches).await;
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");
    let (from, to) = (today - Duration::days(30), today);
    assert_eq!(
        engine.store.request_counts(&a, from, to).await,
        Ok(vec![(today, 36)])
    );
    assert_eq!(
        engine.store.request_counts(&b, from, to).await,
        Ok(vec![(yesterday, 16)])
    );
    // Every batch learnt a running total; the largest is the final one.
    let seen_max = answers
        .iter()
        .flat_map(|r| r.as_ref().expect("answer"))
        .filter(|(t, _, _)| *t == a.id)
        .map(|(_, _, n)| *n)
        .max();
    assert_eq!(seen_max, Some(36));
}
