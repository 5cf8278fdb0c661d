//! Every audit entry carries the time of the clock the stores were given,
//! on every chain: platform, a tenant's control chain, its data chain.

use crate::engine::{Engine, audit};
use chrono::Duration;
use tenantry::audit::{AuditEntry, AuditFilter};
use tenantry::clock::Clock;
use tenantry::plan::Plan;
use tenantry::record::{CollectionDef, Record};
use tenantry::tenant::Isolation;

crate::on_both_engines!(audit_entries_are_stamped_by_the_injected_clock);

async fn audit_entries_are_stamped_by_the_injected_clock(engine: Engine) {
    for step in 0..2 {
        engine.clock.advance(Duration::hours(step));
        let now = engine.clock.now();
        let tier = [Isolation::Shared, Isolation::Dedicated][step as usize];
        let tenant = engine.tenant(&format!("stamps-{step}"), tier).await;

        let plan = Plan::builtin().remove(0);
        engine
            .store
            .upsert_plan(&plan, &audit("plan.put"))
            .await
            .expect("plan");
        let login = engine
            .store
            .append_audit(Some(&tenant), &audit("user.login"))
            .await
            .expect("append");
        let data = engine.handle(&tenant).await;
        let def = CollectionDef::implicit("notes", now);
        data.put_collection(&def, &audit("collection.put"))
            .await
            .expect("define");
        let record = Record {
            id: tenantry::RecordId::new(),
            data: serde_json::json!({"n": 1}),
            version: 1,
            created_at: now,
            updated_at: now,
            created_by: None,
        };
        data.insert_record(&def, &record, None, &audit("record.create"))
            .await
            .expect("insert");

        let last = |entries: Vec<(i64, AuditEntry)>| entries.last().map(|(_, e)| e.at);
        let all = AuditFilter::default();
        let platform = engine
            .store
            .list_audit(None, &all, 0, 1000)
            .await
            .expect("platform");
        let control = engine
            .store
            .list_audit(Some(&tenant), &all, 0, 1000)
            .await
            .expect("control");
        let records = data.list_audit(&all, 0, 1000).await.expect("data");
        assert_eq!(login.at, now, "{tier:?}");
        assert_eq!(last(platform), Some(now), "platform chain, {tier:?}");
        assert_eq!(last(control), Some(now), "control chain, {tier:?}");
        assert_eq!(last(records), Some(now), "data chain, {tier:?}");
    }
}
