//! Row-level security, proven through the runtime role the server uses.

use crate::support::{TestApp, USER_PASSWORD};
use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use std::str::FromStr;

const RUNTIME_ROLE: &str = "tenantry_app";

/// Tables that hold a `tenant_id` but are deliberately outside RLS: a
/// refresh token is looked up by the hash of its secret before any tenant
/// is known, and holds no tenant data; the platform's audit chain keeps the
/// audit layout, but its `tenant_id` is always NULL (a CHECK holds it so);
/// a job row is the platform's record of work on a tenant (kind, progress,
/// an error text, a result path), claimed by workers across tenants.
const NOT_TENANT_DATA: [&str; 3] = ["refresh_tokens", "platform_audit", "jobs"];

async fn connect(app: &TestApp, role: Option<&str>, database: Option<&str>) -> PgConnection {
    let url = tenantry_server::settings::exposed(&app.app_state.settings.database_url)
        .expect("pg url")
        .to_owned();
    let mut options = PgConnectOptions::from_str(&url).expect("url");
    if let Some(role) = role {
        options = options.username(role);
    }
    if let Some(db) = database {
        options = options.database(db);
    }
    options.connect().await.expect("connect")
}

/// A transaction of the runtime role with `tenantry.tenant_id` set to
/// `tenant`, as the server begins each unit of work ("" = set but empty).
async fn begin_as<'c>(
    conn: &'c mut PgConnection,
    tenant: &str,
) -> sqlx::Transaction<'c, sqlx::Postgres> {
    let mut tx = conn.begin().await.expect("begin");
    sqlx::query("SELECT set_config('tenantry.tenant_id', $1, true)")
        .bind(tenant)
        .execute(&mut *tx)
        .await
        .expect("set tenant");
    tx
}

/// Two shared tenants with a user and a record each; returns their ids and tokens.
async fn two_tenants(app: &TestApp) -> Vec<(String, String)> {
    let staff = app.admin_token().await;
    let mut out = Vec::new();
    for slug in ["rls-a", "rls-b"] {
        let t = app
            .post(
                "/api/v1/tenants",
                Some(&staff),
                json!({"name": slug, "slug": slug, "plan": "premium", "isolation": "shared"}),
            )
            .await;
        assert_eq!(t.status, 201, "{}", t.text);
        let (_, token) = app
            .tenant_user(&staff, slug, &format!("u@{slug}.example"), "admin")
            .await;
        let r = app
            .post(
                "/api/v1/collections/notes/records",
                Some(&token),
                json!({"owner": slug}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        out.push((t.body["id"].as_str().expect("id").to_owned(), token));
    }
    out
}

/// Every table with a `tenant_id` column, in `schemas`, with its RLS flags.
async fn tenant_tables(conn: &mut PgConnection) -> Vec<(String, bool, bool)> {
    sqlx::query_as(
        "SELECT n.nspname || '.' || c.relname, c.relrowsecurity, c.relforcerowsecurity
         FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
         WHERE c.relkind IN ('r', 'p') AND n.nspname IN ('public', 'tenant_data')
         ORDER BY 1",
    )
    .fetch_all(conn)
    .await
    .expect("catalog")
}

#[tokio::test]
async fn runtime_role_is_no_superuser_bypasses_nothing_and_owns_nothing() {
    let app = TestApp::spawn().await;
    let mut conn = connect(&app, Some(RUNTIME_ROLE), None).await;
    let (user, superuser, bypass): (String, bool, bool) = sqlx::query_as(
        "SELECT current_user::text, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(&mut conn)
    .await
    .expect("role");
    assert_eq!(user, RUNTIME_ROLE);
    assert!(!superuser && !bypass);
    let owned: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)
           AND n.nspname IN ('public', 'tenant_data')",
    )
    .fetch_one(&mut conn)
    .await
    .expect("owned");
    assert_eq!(owned, 0, "the runtime role owns no table");
    // Nor can it change the schema or drop the audit trail.
    let ddl = sqlx::query("CREATE TABLE public.sneaky (x int)")
        .execute(&mut conn)
        .await;
    assert!(ddl.is_err(), "runtime role created a table");
    let alter = sqlx::query("ALTER TABLE users DISABLE ROW LEVEL SECURITY")
        .execute(&mut conn)
        .await;
    assert!(alter.is_err(), "runtime role switched RLS off");
    // Every audit chain is append-only for it.
    for table in [
        "public.audit_log",
        "public.platform_audit",
        "tenant_data.audit_log",
    ] {
        for statement in [
            format!("UPDATE {table} SET action = 'forged'"),
            format!("DELETE FROM {table}"),
        ] {
            let denied = sqlx::query(&statement).execute(&mut conn).await;
            assert!(denied.is_err(), "runtime role may run: {statement}");
        }
    }
}

#[tokio::test]
async fn every_tenant_table_forces_row_level_security_in_every_database() {
    let app = TestApp::spawn().await;
    let staff = app.admin_token().await;
    let ded = app
        .post(
            "/api/v1/tenants",
            Some(&staff),
            json!({"name": "ded", "slug": "ded", "plan": "enterprise", "isolation": "dedicated"}),
        )
        .await;
    assert_eq!(ded.status, 201, "{}", ded.text);
    let hex = ded.body["id"].as_str().expect("id").replace('-', "");
    let mut main = connect(&app, None, None).await;
    let dedicated_db: String =
        sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE datname LIKE '%' || $1")
            .bind(&hex)
            .fetch_one(&mut main)
            .await
            .expect("dedicated database");
    let mut dedicated = connect(&app, None, Some(&dedicated_db)).await;

    let main_tables = tenant_tables(&mut main).await;
    let dedicated_tables = tenant_tables(&mut dedicated).await;
    for name in ["public.users", "public.audit_log", "tenant_data.records"] {
        assert!(
            main_tables.iter().any(|(t, _, _)| t == name),
            "{name} missing from {main_tables:?}"
        );
    }
    assert!(
        dedicated_tables
            .iter()
            .any(|(t, _, _)| t == "tenant_data.records")
    );
    for (table, enabled, forced) in main_tables.iter().chain(&dedicated_tables) {
        if NOT_TENANT_DATA
            .iter()
            .any(|t| table.ends_with(&format!(".{t}")))
        {
            continue;
        }
        assert!(
            *enabled && *forced,
            "{table} holds tenant rows without ENABLE + FORCE ROW LEVEL SECURITY"
        );
    }
}

#[tokio::test]
async fn no_tenant_set_sees_nothing_and_one_tenant_cannot_touch_another() {
    let app = TestApp::spawn().await;
    let tenants = two_tenants(&app).await;
    let (a, b) = (&tenants[0].0, &tenants[1].0);
    let mut owner = connect(&app, None, None).await;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_data.records")
        .fetch_one(&mut owner)
        .await
        .expect("count");
    assert_eq!(total, 2, "the owner (superuser here) sees both rows");

    let mut conn = connect(&app, Some(RUNTIME_ROLE), None).await;
    for table in [
        "tenant_data.records",
        "users",
        "tenant_keys",
        "tenant_data.usage",
    ] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&mut conn)
            .await
            .expect("count");
        assert_eq!(n, 0, "{table} without a tenant set");
    }
    // An empty setting fails closed too.
    let mut tx = begin_as(&mut conn, "").await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_data.records")
        .fetch_one(&mut *tx)
        .await
        .expect("count");
    assert_eq!(n, 0, "empty tenant setting");
    tx.rollback().await.expect("rollback");

    // Tenant A set, SQL naming B's rows explicitly.
    let mut tx = begin_as(&mut conn, a).await;
    let b_uuid: uuid::Uuid = b.parse().expect("uuid");
    let own: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_data.records")
        .fetch_one(&mut *tx)
        .await
        .expect("count");
    assert_eq!(own, 1, "A sees its own record");
    let read: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tenant_data.records WHERE tenant_id = $1")
            .bind(b_uuid)
            .fetch_one(&mut *tx)
            .await
            .expect("read");
    assert_eq!(read, 0, "read B's rows");
    for sql in [
        "UPDATE tenant_data.records SET version = 99 WHERE tenant_id = $1",
        "UPDATE users SET name = 'pwned' WHERE tenant_id = $1",
        "DELETE FROM tenant_data.records WHERE tenant_id = $1",
    ] {
        let touched = sqlx::query(sql)
            .bind(b_uuid)
            .execute(&mut *tx)
            .await
            .expect(sql);
        assert_eq!(touched.rows_affected(), 0, "{sql} touched B's rows");
    }
    // Moving A's row over to B is refused by WITH CHECK.
    let moved = sqlx::query("UPDATE tenant_data.records SET tenant_id = $1")
        .bind(b_uuid)
        .execute(&mut *tx)
        .await;
    assert!(moved.is_err(), "moved a row into B");
    tx.rollback().await.expect("rollback");
    let mut tx = begin_as(&mut conn, a).await;
    let inserted = sqlx::query(
        "INSERT INTO tenant_data.records (tenant_id, collection, id, data, size, version, created_at, updated_at)
         VALUES ($1, 'notes', gen_random_uuid(), '{}', 2, 1, now(), now())",
    )
    .bind(b_uuid)
    .execute(&mut *tx)
    .await;
    assert!(inserted.is_err(), "inserted a row as B");
    tx.rollback().await.expect("rollback");

    // The setting ended with each transaction: nothing is visible again.
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_data.records")
        .fetch_one(&mut conn)
        .await
        .expect("count");
    assert_eq!(n, 0, "tenant setting outlived its transaction");
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_data.records")
        .fetch_one(&mut owner)
        .await
        .expect("count");
    assert_eq!(after, 2, "B's row untouched");
}

#[tokio::test]
async fn a_failed_transaction_leaves_no_tenant_behind_on_its_connection() {
    let app = TestApp::spawn().await;
    let tenants = two_tenants(&app).await;
    let mut conn = connect(&app, Some(RUNTIME_ROLE), None).await;
    let mut tx = begin_as(&mut conn, &tenants[0].0).await;
    let failed = sqlx::query("SELECT 1 / 0").execute(&mut *tx).await;
    assert!(failed.is_err());
    drop(tx); // rolled back, as a cancelled request's transaction is
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_data.records")
        .fetch_one(&mut conn)
        .await
        .expect("count");
    assert_eq!(n, 0, "A's context survived its failed transaction");
}

/// Through the real server with a pool of two connections: two tenants'
/// requests interleave for thousands of requests, some of A's failing
/// midway (unique violations after the insert), and no response ever
/// carries the other tenant's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_connections_never_leak_a_tenant_under_concurrency() {
    let app = TestApp::spawn_with(tempfile::tempdir().expect("dir"), |s| {
        s.database_max_connections = 2;
    })
    .await;
    let tenants = two_tenants(&app).await;
    for (_, token) in &tenants {
        let put = app
            .call(
                reqwest::Method::PUT,
                "/api/v1/collections/notes",
                Some(token),
                Some(json!({"unique": ["owner"]})),
            )
            .await;
        assert!(put.status.is_success(), "{}", put.text);
    }
    let app = std::sync::Arc::new(app);
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let app = app.clone();
        let tenants = tenants.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..250 {
                let (me, other) = if (worker + i) % 2 == 0 {
                    (0, 1)
                } else {
                    (1, 0)
                };
                let token = &tenants[me].1;
                if i % 5 == 0 {
                    // A duplicate of the unique owner: the transaction fails after its insert.
                    let dup = app
                        .post(
                            "/api/v1/collections/notes/records",
                            Some(token),
                            json!({"owner": if me == 0 { "rls-a" } else { "rls-b" }}),
                        )
                        .await;
                    assert_eq!(dup.status, 409, "{}", dup.text);
                    continue;
                }
                let listed = app
                    .get("/api/v1/collections/notes/records?limit=50", Some(token))
                    .await;
                assert_eq!(listed.status, 200, "{}", listed.text);
                let items = listed.body["items"].as_array().expect("items");
                assert_eq!(items.len(), 1, "{}", listed.text);
                let owner = &items[0]["data"]["owner"];
                let other_slug = if other == 0 { "rls-a" } else { "rls-b" };
                assert_ne!(owner, &Value::from(other_slug), "foreign row");
            }
        }));
    }
    for t in tasks {
        t.await.expect("worker");
    }
    let login = app
        .tenant_login("rls-a", "u@rls-a.example", USER_PASSWORD)
        .await;
    assert_eq!(login.status, 200);
}
