//! Records through a tenant's handle: versions, unique claims, the storage
//! quota, usage, seals and the data chain, on both tiers.

use crate::engine::{Engine, audit};
use chrono::Utc;
use futures::future::join_all;
use serde_json::{Value, json};
use std::sync::Arc;
use tenantry::audit::{AuditFilter, ChainCheck};
use tenantry::ids::RecordId;
use tenantry::record::{CollectionDef, Record};
use tenantry::store::write_plan::record_size;
use tenantry::store::{StoreError, TenantData};
use tenantry::tenant::Isolation;

crate::on_both_engines!(
    versions_guard_updates_and_deletes,
    a_unique_value_is_taken_once_among_concurrent_writers,
    the_storage_quota_holds_among_concurrent_writers,
    usage_counts_the_bytes_of_what_is_stored,
    a_sealed_copy_refuses_writes_until_unsealed,
    every_write_links_onto_the_data_chain,
);

const TIERS: [Isolation; 2] = [Isolation::Shared, Isolation::Dedicated];

fn record(data: Value) -> Record {
    let now = Utc::now();
    Record {
        id: RecordId::new(),
        data,
        version: 1,
        created_at: now,
        updated_at: now,
        created_by: None,
    }
}

/// A fresh tenant on `tier` and one collection defined in it.
async fn defined(
    engine: &Engine,
    base: &str,
    tier: Isolation,
    name: &str,
    unique: &[&str],
) -> (Arc<dyn TenantData>, CollectionDef) {
    let tenant = engine
        .tenant(&format!("{base}-{}", tier.as_str()), tier)
        .await;
    let data = engine.handle(&tenant).await;
    let mut def = CollectionDef::implicit(name, Utc::now());
    def.unique = unique.iter().map(|f| (*f).to_owned()).collect();
    data.put_collection(&def, &audit("collection.put"))
        .await
        .expect("define");
    (data, def)
}

async fn versions_guard_updates_and_deletes(engine: Engine) {
    for tier in TIERS {
        let (data, def) = defined(&engine, "versions", tier, "notes", &[]).await;
        let first = record(json!({"text": "one"}));
        data.insert_record(&def, &first, None, &audit("record.create"))
            .await
            .expect("insert");

        let mut second = first.clone();
        second.data = json!({"text": "two"});
        second.version = 2;
        data.update_record(&def, &second, 1, None, &audit("record.update"))
            .await
            .expect("update at the version read");
        let stale = data
            .update_record(&def, &second, 1, None, &audit("record.update"))
            .await;
        assert_eq!(stale, Err(StoreError::VersionMismatch), "{tier:?}");
        let stored = data.record("notes", first.id).await.expect("read");
        assert_eq!(
            stored.map(|r| (r.version, r.data)),
            Some((2, json!({"text": "two"})))
        );

        let stale = data
            .delete_record(&def, first.id, Some(1), &audit("record.delete"))
            .await;
        assert_eq!(stale, Err(StoreError::VersionMismatch), "{tier:?}");
        data.delete_record(&def, first.id, Some(2), &audit("record.delete"))
            .await
            .expect("delete at the version read");
        let gone = data
            .delete_record(&def, first.id, None, &audit("record.delete"))
            .await;
        assert_eq!(gone, Err(StoreError::NotFound), "{tier:?}");
    }
}

async fn a_unique_value_is_taken_once_among_concurrent_writers(engine: Engine) {
    // A short value is claimed as its text, a long one as a digest: both
    // must be taken exactly once.
    let long = "x".repeat(3000);
    for tier in TIERS {
        let (data, def) = defined(&engine, "unique", tier, "people", &["email"]).await;
        let mut holders = Vec::new();
        for value in ["ada@example.com", long.as_str()] {
            let writes = (0..8).map(|_| {
                let data = data.clone();
                let def = def.clone();
                let rec = record(json!({"email": value}));
                async move {
                    data.insert_record(&def, &rec, None, &audit("record.create"))
                        .await
                        .map(|()| rec.id)
                }
            });
            let results = join_all(writes).await;
            let won: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
            assert_eq!(won.len(), 1, "{tier:?}: {results:?}");
            holders.push(*won[0]);
            assert!(
                results
                    .iter()
                    .all(|r| r.is_ok() || *r == Err(StoreError::Conflict("email".into()))),
                "{tier:?}: {results:?}"
            );
        }
        assert_eq!(data.usage().await.expect("usage").records, 2, "{tier:?}");

        // Deleting the holder frees its value; changing it frees the old one.
        data.delete_record(&def, holders[0], None, &audit("record.delete"))
            .await
            .expect("delete");
        let again = record(json!({"email": "ada@example.com"}));
        data.insert_record(&def, &again, None, &audit("record.create"))
            .await
            .expect("a freed value is free");
        let mut moved = again.clone();
        moved.data = json!({"email": "grace@example.com"});
        moved.version = 2;
        data.update_record(&def, &moved, 1, None, &audit("record.update"))
            .await
            .expect("update");
        data.insert_record(
            &def,
            &record(json!({"email": "ada@example.com"})),
            None,
            &audit("record.create"),
        )
        .await
        .expect("the old value is free after an update");
        let taken = data
            .insert_record(
                &def,
                &record(json!({"email": "grace@example.com"})),
                None,
                &audit("record.create"),
            )
            .await;
        assert_eq!(taken, Err(StoreError::Conflict("email".into())), "{tier:?}");
    }
}

async fn the_storage_quota_holds_among_concurrent_writers(engine: Engine) {
    for tier in TIERS {
        let (data, def) = defined(&engine, "quota", tier, "blobs", &[]).await;
        let body = json!({"blob": "y".repeat(100)});
        let size = record_size(&body) as u64;
        let max = size * 5 + size / 2;
        let writes = (0..12).map(|_| {
            let data = data.clone();
            let def = def.clone();
            let rec = record(body.clone());
            async move {
                data.insert_record(&def, &rec, Some(max), &audit("record.create"))
                    .await
            }
        });
        let results = join_all(writes).await;
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            5,
            "{tier:?}: {results:?}"
        );
        assert!(
            results
                .iter()
                .all(|r| r.is_ok() || *r == Err(StoreError::QuotaExceeded)),
            "{tier:?}: {results:?}"
        );
        let usage = data.usage().await.expect("usage");
        assert_eq!(
            (usage.records, usage.storage_bytes),
            (5, size * 5),
            "{tier:?}"
        );
    }
}

async fn usage_counts_the_bytes_of_what_is_stored(engine: Engine) {
    for tier in TIERS {
        let (data, def) = defined(&engine, "usage", tier, "texts", &[]).await;
        let ascii = record(json!({"t": "plain"}));
        let mut wide = record(json!({"t": "ünïcödé ✓ 漢字"}));
        for rec in [&ascii, &wide] {
            data.insert_record(&def, rec, None, &audit("record.create"))
                .await
                .expect("insert");
        }
        let bytes = |recs: &[&Record]| {
            recs.iter()
                .map(|r| record_size(&r.data) as u64)
                .sum::<u64>()
        };
        let usage = data.usage().await.expect("usage");
        assert_eq!(
            (usage.records, usage.storage_bytes),
            (2, bytes(&[&ascii, &wide])),
            "{tier:?}"
        );

        // Rewriting non-ASCII text leaves the count where a fresh write puts it.
        wide.data = json!({"t": "ünïcödé ✓ 漢字 and more 漢字"});
        wide.version = 2;
        data.update_record(&def, &wide, 1, None, &audit("record.update"))
            .await
            .expect("update");
        let usage = data.usage().await.expect("usage");
        assert_eq!(usage.storage_bytes, bytes(&[&ascii, &wide]), "{tier:?}");

        data.delete_record(&def, ascii.id, None, &audit("record.delete"))
            .await
            .expect("delete");
        let usage = data.usage().await.expect("usage");
        assert_eq!(
            (usage.records, usage.storage_bytes),
            (1, bytes(&[&wide])),
            "{tier:?}"
        );
    }
}

async fn a_sealed_copy_refuses_writes_until_unsealed(engine: Engine) {
    for tier in TIERS {
        let (data, def) = defined(&engine, "sealed", tier, "items", &[]).await;
        let kept = record(json!({"n": 1}));
        data.insert_record(&def, &kept, None, &audit("record.create"))
            .await
            .expect("insert");

        data.seal().await.expect("seal");
        let refused = data
            .insert_record(
                &def,
                &record(json!({"n": 2})),
                None,
                &audit("record.create"),
            )
            .await;
        assert_eq!(refused, Err(StoreError::Sealed), "{tier:?}");
        let refused = data
            .delete_record(&def, kept.id, None, &audit("record.delete"))
            .await;
        assert_eq!(refused, Err(StoreError::Sealed), "{tier:?}");
        assert!(
            data.record("items", kept.id).await.expect("read").is_some(),
            "reads go on"
        );

        data.unseal().await.expect("unseal");
        data.insert_record(
            &def,
            &record(json!({"n": 3})),
            None,
            &audit("record.create"),
        )
        .await
        .expect("writes again");
    }
}

async fn every_write_links_onto_the_data_chain(engine: Engine) {
    for tier in TIERS {
        let (data, def) = defined(&engine, "chain", tier, "events", &[]).await;
        // Concurrent writers append to one chain, records and definitions
        // alike (each its own way on each engine): no fork, no gap.
        let redefinitions = (0..5).map(|_| {
            let data = data.clone();
            let def = def.clone();
            async move { data.put_collection(&def, &audit("collection.put")).await }
        });
        let writes = (0..10).map(|n| {
            let data = data.clone();
            let def = def.clone();
            async move {
                data.insert_record(
                    &def,
                    &record(json!({ "n": n })),
                    None,
                    &audit("record.create"),
                )
                .await
            }
        });
        let (written, redefined) = futures::join!(join_all(writes), join_all(redefinitions));
        assert!(written.iter().all(Result::is_ok), "{written:?}");
        assert!(redefined.iter().all(Result::is_ok), "{redefined:?}");

        let entries = data
            .list_audit(&AuditFilter::default(), 0, 100)
            .await
            .expect("list");
        let mut check = ChainCheck::default();
        entries.iter().for_each(|(_, e)| check.feed(e));
        assert_eq!((check.entries, check.first_broken), (16, None), "{tier:?}");
        let actions: Vec<&str> = entries.iter().map(|(_, e)| e.action.as_str()).collect();
        assert_eq!(
            actions.iter().filter(|a| **a == "record.create").count(),
            10
        );
        let last = entries.last().map(|(seq, e)| (*seq, e.hash.clone()));
        assert_eq!(data.audit_head().await.expect("head"), last, "{tier:?}");

        let creates = data
            .list_audit(
                &AuditFilter {
                    action: Some("record.create".into()),
                    ..AuditFilter::default()
                },
                0,
                100,
            )
            .await
            .expect("filtered");
        assert_eq!(creates.len(), 10, "{tier:?}");
    }
}
