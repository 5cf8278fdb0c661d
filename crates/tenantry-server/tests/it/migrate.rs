//! Schema migrations across every tenant: a schema that is behind stops the
//! start with the command that fixes it; `migrate` brings every dedicated
//! tenant up, reports a broken one without holding up the others, records
//! each tenant as it is done and so resumes with what is left.

use crate::support::{TestApp, move_dedicated_storage, settings_for};
use serde_json::json;
use tenantry_server::App;

async fn build_error(settings: tenantry_server::Settings) -> String {
    match App::build(settings).await {
        Ok(_) => panic!("the app started"),
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test]
async fn a_schema_behind_stops_the_start_and_migrate_resumes_past_a_broken_tenant() {
    let app = TestApp::spawn().await;
    let staff = app.admin_token().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let slug = format!("mig-{i}");
        let t = app
            .post(
                "/api/v1/tenants",
                Some(&staff),
                json!({"name": slug, "slug": slug, "plan": "enterprise", "isolation": "dedicated"}),
            )
            .await;
        assert_eq!(t.status, 201, "{}", t.text);
        let (_, token) = app
            .tenant_user(&staff, &slug, &format!("a@{slug}.example"), "admin")
            .await;
        let r = app
            .post(
                "/api/v1/collections/notes/records",
                Some(&token),
                json!({"n": i}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        ids.push(t.body["id"].as_str().expect("id").to_owned());
    }
    let services = app.app_state.services.clone();
    let latest = services.core.data.schema_version();
    assert!(
        services
            .core
            .store
            .dedicated_behind(latest)
            .await
            .expect("behind")
            .is_empty(),
        "new tenants start at the latest version"
    );
    // As if these databases had been created by an older binary.
    for i in 0..3 {
        let t = services
            .core
            .store
            .tenant_by_slug(&format!("mig-{i}"))
            .await
            .expect("store")
            .expect("tenant");
        services
            .core
            .store
            .set_schema_version(&t, 0)
            .await
            .expect("set version");
    }
    drop(services);
    let dir = app.stop().await;
    let settings = settings_for(dir.path()).await;

    let refused = build_error(settings.clone()).await;
    assert!(
        refused.contains("3 dedicated tenant database(s) are behind")
            && refused.contains("tenantry migrate"),
        "{refused}"
    );

    // One tenant's database is out of reach: the others still migrate.
    move_dedicated_storage(&settings, &ids[1], true).await;
    let mut migrate = settings.clone();
    migrate.migrate = true;
    let failed = build_error(migrate.clone()).await;
    assert!(
        failed.contains("1 tenant database(s) failed to migrate (2 migrated)")
            && failed.contains("mig-1"),
        "{failed}"
    );
    // Resumes with what is left: only the broken tenant is retried.
    let again = build_error(migrate.clone()).await;
    assert!(
        again.contains("1 tenant database(s) failed to migrate (0 migrated)"),
        "{again}"
    );

    move_dedicated_storage(&settings, &ids[1], false).await;
    App::build(migrate).await.expect("migrated");
    let app = TestApp::spawn_with(dir, |_| {}).await;
    for i in 0..3 {
        let slug = format!("mig-{i}");
        let login = app
            .tenant_login(
                &slug,
                &format!("a@{slug}.example"),
                crate::support::USER_PASSWORD,
            )
            .await;
        let token = login.body["access_token"].as_str().expect("token");
        let listed = app
            .get("/api/v1/collections/notes/records", Some(token))
            .await;
        assert_eq!(listed.body["items"][0]["data"]["n"], i, "{}", listed.text);
    }
}

#[tokio::test]
async fn a_control_schema_behind_is_refused_with_the_fix() {
    let app = TestApp::spawn().await;
    let dir = app.stop().await;
    let settings = settings_for(dir.path()).await;
    // Forget the newest control migration, as a database from an older binary would lack it.
    let forget =
        "DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations)";
    match crate::BACKEND {
        crate::support::Backend::Sqlite => {
            use sqlx::Connection;
            let mut conn = sqlx::SqliteConnection::connect(&format!(
                "sqlite://{}",
                dir.path().join("control.db").display()
            ))
            .await
            .expect("control.db");
            sqlx::query(forget)
                .execute(&mut conn)
                .await
                .expect("forget");
        }
        crate::support::Backend::Postgres => {
            use sqlx::Connection;
            let url = tenantry_server::settings::exposed(&settings.database_url)
                .expect("url")
                .to_owned();
            let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
            sqlx::query(&forget.replace("_sqlx_migrations", "public._sqlx_migrations"))
                .execute(&mut conn)
                .await
                .expect("forget");
        }
    }
    let refused = build_error(settings).await;
    assert!(
        refused.contains("control") && refused.contains("tenantry migrate"),
        "{refused}"
    );
}
