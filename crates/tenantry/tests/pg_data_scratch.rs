//! Temporary checks of PgDataPlane (to be deleted).

use chrono::{Duration as CDuration, Utc};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};
use std::sync::Arc;
use std::time::Duration;
use tenantry::Tenant;
use tenantry::ids::{RecordId, TenantId};
use tenantry::record::{
    CollectionDef, Filter, FilterOp, Operand, Record, RecordCursor, RecordQuery, SortKey,
    sort_value,
};
use tenantry::store::postgres::{PgDataPlane, PgDatabase, PgSettings};
use tenantry::store::{DataPlane, StoreError, TenantData};
use tenantry::tenant::{Isolation, Slug, TenantStatus};

fn tenant(iso: Isolation) -> Tenant {
    let id = TenantId::new();
    Tenant {
        id,
        slug: Slug::parse(&format!("t-{}", &id.0.simple().to_string()[20..])).unwrap(),
        name: "t".into(),
        plan: "basic".into(),
        status: TenantStatus::Active,
        isolation: iso,
        organization_id: None,
        domain: None,
        metadata: json!({}),
        branding: json!({}),
        created_at: Utc::now(),
        updated_at: Utc::now(),
    }
}

fn def(name: &str, unique: &[&str], indexed: &[&str]) -> CollectionDef {
    CollectionDef {
        name: name.into(),
        schema: None,
        unique: unique.iter().map(|s| s.to_string()).collect(),
        indexed: indexed.iter().map(|s| s.to_string()).collect(),
        required_feature: None,
        created_at: Utc::now(),
        updated_at: Utc::now(),
    }
}

fn rec(data: Value, i: i64) -> Record {
    let t = Utc::now() + CDuration::milliseconds(i);
    Record {
        id: RecordId::new(),
        data,
        version: 1,
        created_at: t,
        updated_at: t,
        created_by: None,
    }
}

fn q(filters: Vec<Filter>, sort: SortKey, desc: bool, limit: u32) -> RecordQuery {
    RecordQuery {
        filters,
        sort,
        descending: desc,
        after: None,
        limit,
    }
}

fn f(field: &str, op: FilterOp, raws: &[&str]) -> Filter {
    Filter {
        field: field.into(),
        op,
        operands: raws.iter().map(|r| Operand::parse(r)).collect(),
    }
}

async fn page_all(
    data: &dyn TenantData,
    d: &CollectionDef,
    sort: SortKey,
    desc: bool,
    limit: u32,
) -> Vec<Record> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let mut query = q(vec![], sort.clone(), desc, limit);
        query.after = after.clone();
        let page = data.list_records(d, &query).await.unwrap();
        if page.is_empty() {
            break;
        }
        let last = page.last().unwrap();
        after = Some(RecordCursor {
            key: sort_value(last, &sort),
            id: last.id,
        });
        out.extend(page);
    }
    out
}

async fn exercise(plane: &PgDataPlane, iso: Isolation) {
    let t = tenant(iso);
    plane.provision(&t).await.unwrap();
    let data = plane.handle(&t).await.unwrap();
    let other = tenant(iso);
    plane.provision(&other).await.unwrap();
    let odata = plane.handle(&other).await.unwrap();

    let d = def("things", &["code"], &["n", "s", "a.b"]);
    assert!(data.put_collection(&d).await.unwrap());
    assert!(!data.put_collection(&d).await.unwrap());
    // implicit never overwrites
    data.create_collection_if_absent(&def("things", &[], &[]))
        .await
        .unwrap();
    assert_eq!(
        data.collection("things").await.unwrap().unwrap().unique,
        vec!["code"]
    );
    data.create_collection_if_absent(&def("implicit", &[], &[]))
        .await
        .unwrap();
    let names: Vec<String> = data
        .collections()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, vec!["implicit", "things"]);
    assert!(odata.collections().await.unwrap().is_empty());

    let values = vec![
        json!({"n": 3, "s": "b", "code": "x1", "a": {"b": 2}}),
        json!({"n": 1.5, "s": "a", "code": "x2", "a": {"b": "z"}}),
        json!({"n": "7", "s": "B", "code": "x3"}),
        json!({"n": true, "s": "é", "code": null}),
        json!({"s": "a", "n": null}),
        json!({"n": -2, "s": "", "code": 5}),
        json!({"n": 10, "s": "aa", "code": "x7"}),
        json!({"n": false, "s": ["q"], "code": "x8"}),
        json!({"n": "", "s": {"k": 1}, "code": "x9"}),
        json!({"n": 3, "s": "b", "code": "x10"}),
    ];
    let mut recs = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let r = rec(v.clone(), i as i64);
        data.insert_record(&d, &r, None).await.unwrap();
        recs.push(r);
    }
    // Unique conflicts.
    let dup = rec(json!({"code": "x1"}), 100);
    match data.insert_record(&d, &dup, None).await {
        Err(StoreError::Conflict(f)) => assert_eq!(f, "code"),
        other => panic!("{other:?}"),
    }
    // Number 5 vs "5" are distinct.
    data.insert_record(&d, &rec(json!({"code": "5"}), 101), None)
        .await
        .unwrap();
    // other tenant may use the same code
    let od = def("things", &["code"], &["n"]);
    odata.put_collection(&od).await.unwrap();
    odata
        .insert_record(&od, &rec(json!({"code": "x1"}), 0), None)
        .await
        .unwrap();
    // duplicate id
    match data.insert_record(&d, &recs[0], None).await {
        Err(StoreError::Conflict(f)) => assert_eq!(f, "id"),
        other => panic!("{other:?}"),
    }

    // get
    let got = data.record("things", recs[0].id).await.unwrap().unwrap();
    assert_eq!(got.data, recs[0].data);
    assert!(odata.record("things", recs[0].id).await.unwrap().is_none());

    // filters vs in-memory
    let all: Vec<Record> = data
        .list_records(&d, &q(vec![], SortKey::CreatedAt, false, 1000))
        .await
        .unwrap();
    assert_eq!(all.len(), 11);
    let filters = vec![
        f("n", FilterOp::Eq, &["3"]),
        f("n", FilterOp::Eq, &["7"]),
        f("n", FilterOp::Ne, &["3"]),
        f("n", FilterOp::Gte, &["3"]),
        f("n", FilterOp::Lte, &["1.5"]),
        f("s", FilterOp::Gte, &["a"]),
        f("s", FilterOp::Lte, &["b"]),
        f("s", FilterOp::Gte, &["B"]),
        f("s", FilterOp::Eq, &["é"]),
        f("s", FilterOp::In, &["a", "b", "zz"]),
        f("n", FilterOp::In, &["3", "10", "7"]),
        f("a.b", FilterOp::Eq, &["2"]),
        f("a.b", FilterOp::Gte, &["a"]),
        f("missing", FilterOp::Ne, &["x"]),
        f("s", FilterOp::Gte, &["a\0b"]),
        f("s", FilterOp::Lte, &["a\0"]),
        f("s", FilterOp::Eq, &["a\0"]),
        f("s", FilterOp::Ne, &["a\0"]),
    ];
    for flt in filters {
        let got: Vec<RecordId> = data
            .list_records(&d, &q(vec![flt.clone()], SortKey::CreatedAt, false, 1000))
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        let want: Vec<RecordId> = all
            .iter()
            .filter(|r| flt.accepts(&r.data))
            .map(|r| r.id)
            .collect();
        assert_eq!(got, want, "{flt:?}");
    }
    // combined filters
    let fl = vec![f("n", FilterOp::Gte, &["0"]), f("s", FilterOp::Eq, &["b"])];
    let got = data
        .list_records(&d, &q(fl, SortKey::CreatedAt, false, 100))
        .await
        .unwrap();
    assert_eq!(got.len(), 2);

    // sorts & paging
    for sort in [
        SortKey::CreatedAt,
        SortKey::UpdatedAt,
        SortKey::Field("n".into()),
        SortKey::Field("s".into()),
        SortKey::Field("a.b".into()),
    ] {
        for desc in [false, true] {
            let full = data
                .list_records(&d, &q(vec![], sort.clone(), desc, 1000))
                .await
                .unwrap();
            for limit in [1, 2, 3, 5] {
                let paged = page_all(data.as_ref(), &d, sort.clone(), desc, limit).await;
                let a: Vec<_> = paged.iter().map(|r| r.id).collect();
                let b: Vec<_> = full.iter().map(|r| r.id).collect();
                assert_eq!(a, b, "{sort:?} desc={desc} limit={limit}");
            }
            if let SortKey::Field(fname) = &sort {
                let keys: Vec<Value> = full.iter().map(|r| sort_value(r, &sort)).collect();
                eprintln!("{fname} desc={desc}: {keys:?}");
            }
        }
    }
    let by_n: Vec<Value> = data
        .list_records(&d, &q(vec![], SortKey::Field("n".into()), false, 100))
        .await
        .unwrap()
        .iter()
        .map(|r| r.data.get("n").cloned().unwrap_or(Value::Null))
        .collect();
    eprintln!("by n: {by_n:?}");

    // update / version mismatch / not found
    let mut r0 = recs[0].clone();
    r0.data = json!({"n": 4, "code": "x2"});
    r0.version = 2;
    match data.update_record(&d, &r0, 1, None).await {
        Err(StoreError::Conflict(f)) => assert_eq!(f, "code"),
        other => panic!("{other:?}"),
    }
    r0.data = json!({"n": 4, "code": "new"});
    match data.update_record(&d, &r0, 5, None).await {
        Err(StoreError::VersionMismatch) => {}
        other => panic!("{other:?}"),
    }
    let u0 = data.usage().await.unwrap();
    data.update_record(&d, &r0, 1, None).await.unwrap();
    let u1 = data.usage().await.unwrap();
    assert_eq!(
        u1.storage_bytes as i64 - u0.storage_bytes as i64,
        r0.data.to_string().len() as i64 - recs[0].data.to_string().len() as i64
    );
    // x1 free again
    data.insert_record(&d, &rec(json!({"code": "x1"}), 200), None)
        .await
        .unwrap();
    let mut ghost = rec(json!({}), 0);
    ghost.version = 2;
    match data.update_record(&d, &ghost, 1, None).await {
        Err(StoreError::NotFound) => {}
        other => panic!("{other:?}"),
    }
    match odata.update_record(&d, &r0, 2, None).await {
        Err(StoreError::NotFound) => {}
        other => panic!("{other:?}"),
    }
    // delete
    match data.delete_record(&d, r0.id, Some(1)).await {
        Err(StoreError::VersionMismatch) => {}
        other => panic!("{other:?}"),
    }
    match odata.delete_record(&d, r0.id, None).await {
        Err(StoreError::NotFound) => {}
        other => panic!("{other:?}"),
    }
    data.delete_record(&d, r0.id, Some(2)).await.unwrap();
    match data.delete_record(&d, r0.id, None).await {
        Err(StoreError::NotFound) => {}
        other => panic!("{other:?}"),
    }
    // "new" free again
    data.insert_record(&d, &rec(json!({"code": "new"}), 300), None)
        .await
        .unwrap();

    // usage equals the sum of sizes
    let all = data
        .list_records(&d, &q(vec![], SortKey::CreatedAt, false, 1000))
        .await
        .unwrap();
    let u = data.usage().await.unwrap();
    assert_eq!(u.records, all.len() as u64);
    assert_eq!(
        u.storage_bytes,
        all.iter()
            .map(|r| r.data.to_string().len() as u64)
            .sum::<u64>()
    );

    // quota
    let big = rec(json!({"pad": "x".repeat(100)}), 400);
    let size = big.data.to_string().len() as u64;
    match data
        .insert_record(&d, &big, Some(u.storage_bytes + size - 1))
        .await
    {
        Err(StoreError::QuotaExceeded) => {}
        other => panic!("{other:?}"),
    }
    data.insert_record(&d, &big, Some(u.storage_bytes + size))
        .await
        .unwrap();
    let mut bigger = big.clone();
    bigger.data = json!({"pad": "x".repeat(101)});
    bigger.version = 2;
    match data
        .update_record(&d, &bigger, 1, Some(u.storage_bytes + size))
        .await
    {
        Err(StoreError::QuotaExceeded) => {}
        other => panic!("{other:?}"),
    }
    // shrinking is always fine
    let mut smaller = big.clone();
    smaller.data = json!({"pad": "x"});
    smaller.version = 2;
    data.update_record(&d, &smaller, 1, Some(0)).await.unwrap();

    // put_collection with a unique field existing records break
    let d2 = def("things", &["s"], &["n"]);
    match data.put_collection(&d2).await {
        Err(StoreError::Conflict(f)) => assert_eq!(f, "s"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        data.collection("things").await.unwrap().unwrap().unique,
        vec!["code"]
    );

    // group counts
    let (total, groups) = data.group_counts("things", "n").await.unwrap();
    eprintln!("groups n: total {total} {groups:?}");
    assert_eq!(total, data.usage().await.unwrap().records);
    let (total, groups) = data.group_counts("things", "a").await.unwrap();
    eprintln!("groups a: total {total} {groups:?}");
    let (total, groups) = data.group_counts("nothing", "a").await.unwrap();
    assert_eq!((total, groups.len()), (0, 0));

    // created_at cursor with garbage key does not error
    for key in [json!("garbage"), json!(5), json!("a\0b"), json!(null)] {
        for desc in [false, true] {
            let mut query = q(vec![], SortKey::CreatedAt, desc, 100);
            query.after = Some(RecordCursor {
                key: key.clone(),
                id: RecordId::new(),
            });
            let n = data.list_records(&d, &query).await.unwrap().len();
            eprintln!("garbage cursor {key} desc={desc}: {n}");
            let mut query = q(vec![], SortKey::Field("s".into()), desc, 100);
            query.after = Some(RecordCursor {
                key: key.clone(),
                id: RecordId::new(),
            });
            let n = data.list_records(&d, &query).await.unwrap().len();
            eprintln!("garbage field cursor {key} desc={desc}: {n}");
        }
    }

    // purge
    plane.purge(&t).await.unwrap();
    if iso == Isolation::Shared {
        let data = plane.handle(&t).await.unwrap();
        assert!(data.collections().await.unwrap().is_empty());
        assert_eq!(data.usage().await.unwrap().records, 0);
    }
    assert_eq!(odata.collections().await.unwrap().len(), 1);
    plane.purge(&other).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_data_plane() {
    let suffix = std::process::id();
    let main = format!("scratch_d_{suffix}");
    let settings = PgSettings {
        url: format!("postgres://postgres@127.0.0.1:5432/{main}"),
        runtime_role: "tenantry_app".into(),
        runtime_password: None,
        max_connections: 4,
        acquire_timeout: Duration::from_secs(5),
    };
    let db = PgDatabase::open(&settings).await.unwrap();
    let plane = PgDataPlane::open_with_pool_size(&db, 4, 1).await.unwrap();
    let mut admin = PgConnection::connect("postgres://postgres@127.0.0.1:5432/postgres")
        .await
        .unwrap();

    exercise(&plane, Isolation::Shared).await;
    exercise(&plane, Isolation::Dedicated).await;

    // dedicated db dropped
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_database WHERE datname LIKE $1 AND datname <> $2 AND datname <> $3",
    )
    .bind(format!("{main}%"))
    .bind(&main)
    .bind(format!("{main}_tpl"))
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(left, 0);

    // Registry cap: 20 dedicated tenants, touched repeatedly, concurrently.
    let mut tenants = Vec::new();
    for _ in 0..20 {
        let t = tenant(Isolation::Dedicated);
        plane.provision(&t).await.unwrap();
        tenants.push(t);
    }
    let plane = Arc::new(plane);
    let d = def("c", &["u"], &["n"]);
    for round in 0..3 {
        let mut tasks = Vec::new();
        for (i, t) in tenants.iter().enumerate() {
            let plane = plane.clone();
            let t = t.clone();
            let d = d.clone();
            tasks.push(tokio::spawn(async move {
                let h = plane.handle(&t).await?;
                if round == 0 {
                    h.put_collection(&d).await?;
                }
                h.insert_record(&d, &rec(json!({"n": i, "u": round}), 0), None)
                    .await?;
                h.usage().await
            }));
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let conns: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'tenantry_app' AND datname LIKE $1 AND datname <> $2",
        )
        .bind(format!("{main}_%"))
        .bind(&main)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        let open = plane.open_dedicated_pools().await;
        eprintln!("round {round}: {conns} dedicated connections, {open} pools open");
        assert!(conns <= 4, "{conns}");
        assert!(open <= 4, "{open}");
    }
    for t in &tenants {
        let h = plane.handle(t).await.unwrap();
        assert_eq!(h.usage().await.unwrap().records, 3);
    }
    for t in &tenants {
        plane.purge(t).await.unwrap();
    }
    db.close().await;

    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'scratch\\_d\\_%'")
            .fetch_all(&mut admin)
            .await
            .unwrap();
    eprintln!("dropping {names:?}");
    for name in names {
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await
            .unwrap();
    }
}
