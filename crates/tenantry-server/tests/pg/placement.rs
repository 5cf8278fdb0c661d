//! Placement across three real PostgreSQL clusters: new tenants go to the
//! least-loaded server by weight, their data lives there and nowhere else,
//! super-admins see where, organization admins do not, and it all survives
//! a restart.

use crate::mobility::move_under_load;
use crate::pg::{Cluster, free_port};
use crate::support::{ADMIN_PASSWORD, TestApp, USER_PASSWORD};
use serde_json::json;
use sqlx::{Connection, PgConnection};
use tenantry::Role;
use tenantry::placement::Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_go_to_the_least_loaded_server_and_their_data_lives_there() {
    let mut clusters = Vec::new();
    for _ in 0..3 {
        clusters.push(Cluster::start(free_port()).await);
    }
    let servers: Vec<Server> = [("pg-a", 1.0), ("pg-b", 1.0), ("pg-c", 2.0)]
        .iter()
        .zip(&clusters)
        .map(|((name, weight), c)| Server {
            name: (*name).to_owned(),
            url: format!("{}/tenantry", c.url()),
            weight: *weight,
        })
        .collect();
    let placed = servers.clone();
    let app = TestApp::spawn_with(tempfile::tempdir().expect("dir"), move |s| {
        s.placement.servers = placed;
    })
    .await;
    let staff = app.admin_token().await;
    let org = app
        .post(
            "/api/v1/organizations",
            Some(&staff),
            json!({"name": "Org"}),
        )
        .await;
    assert_eq!(org.status, 201, "{}", org.text);

    let mut tenants = Vec::new();
    for i in 0..8 {
        let slug = format!("place-{i}");
        let tier = if i % 2 == 0 { "shared" } else { "dedicated" };
        let t = app
            .post(
                "/api/v1/tenants",
                Some(&staff),
                json!({"name": slug, "slug": slug, "plan": "enterprise", "isolation": tier,
                       "organization_id": org.body["id"]}),
            )
            .await;
        assert_eq!(t.status, 201, "{}", t.text);
        let shown = app
            .get(&format!("/api/v1/tenants/{slug}"), Some(&staff))
            .await;
        let placement = shown.body["placement"]
            .as_str()
            .unwrap_or_else(|| panic!("no placement for staff: {}", shown.text))
            .to_owned();
        let (_, token) = app
            .tenant_user(&staff, &slug, &format!("a@{slug}.example"), "admin")
            .await;
        let r = app
            .post(
                "/api/v1/collections/notes/records",
                Some(&token),
                json!({"slug": slug}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        tenants.push((
            slug,
            tier,
            t.body["id"].as_str().expect("id").to_owned(),
            placement,
        ));
    }
    let count = |name: &str| tenants.iter().filter(|t| t.3 == name).count();
    assert_eq!(
        (count("pg-a"), count("pg-b"), count("pg-c")),
        (2, 2, 4),
        "weights 1:1:2 over 8 tenants: {tenants:?}"
    );

    // Organization admins see their tenants, not where they live.
    app.app_state
        .services
        .identity
        .create_platform_user(
            &tenantry_server::control::console_operator(),
            "oa@place.example",
            ADMIN_PASSWORD.into(),
            "Org admin",
            Role::OrgAdmin,
            Some(org.body["id"].as_str().expect("org").parse().expect("uuid")),
        )
        .await
        .expect("org admin");
    let oa = app.login("oa@place.example", ADMIN_PASSWORD).await;
    let oa = oa.body["access_token"].as_str().expect("token").to_owned();
    let seen = app.get("/api/v1/tenants/place-0", Some(&oa)).await;
    assert_eq!(seen.status, 200, "{}", seen.text);
    assert!(seen.body.get("placement").is_none(), "{}", seen.text);

    // Each tenant's rows are on its own server and nowhere else.
    for (slug, tier, id, placement) in &tenants {
        let uuid: uuid::Uuid = id.parse().expect("uuid");
        for (server, cluster) in servers.iter().zip(&clusters) {
            let mut owner = PgConnection::connect(&format!("{}/postgres", cluster.url()))
                .await
                .expect("connect");
            let here = if *tier == "dedicated" {
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_database WHERE datname = 'tenantry_' || $1",
                )
                .bind(uuid.simple().to_string())
                .fetch_one(&mut owner)
                .await
                .expect("pg_database");
                n
            } else {
                let mut db = PgConnection::connect(&format!("{}/tenantry", cluster.url()))
                    .await
                    .expect("connect");
                sqlx::query_scalar("SELECT count(*) FROM tenant_data.records WHERE tenant_id = $1")
                    .bind(uuid)
                    .fetch_one(&mut db)
                    .await
                    .expect("records")
            };
            assert_eq!(
                here,
                i64::from(server.name == *placement),
                "{slug} ({tier}) on {}",
                server.name
            );
        }
    }

    // Placement survives a restart.
    let dir = app.stop().await;
    let placed = servers.clone();
    let app = TestApp::spawn_with(dir, move |s| s.placement.servers = placed).await;
    for (slug, ..) in &tenants {
        let login = app
            .tenant_login(slug, &format!("a@{slug}.example"), USER_PASSWORD)
            .await;
        let token = login.body["access_token"].as_str().expect("token");
        let listed = app
            .get("/api/v1/collections/notes/records", Some(token))
            .await;
        assert_eq!(listed.body["items"][0]["data"]["slug"], slug.as_str());
    }
}

/// The tenant's rows in the shared records table of one cluster.
async fn shared_records_on(cluster: &Cluster, tenant_id: uuid::Uuid) -> i64 {
    let mut db = PgConnection::connect(&format!("{}/tenantry", cluster.url()))
        .await
        .expect("connect");
    sqlx::query_scalar("SELECT count(*) FROM tenant_data.records WHERE tenant_id = $1")
        .bind(tenant_id)
        .fetch_one(&mut db)
        .await
        .expect("records")
}

/// An online move from one PostgreSQL server to another, under writers, on
/// both tiers: nothing acknowledged is lost and the old server is left
/// without the tenant's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_moves_between_servers_under_writes_and_leaves_nothing_behind() {
    let clusters = [
        Cluster::start(free_port()).await,
        Cluster::start(free_port()).await,
    ];
    let servers: Vec<Server> = ["pg-a", "pg-b"]
        .iter()
        .zip(&clusters)
        .map(|(name, c)| Server {
            name: (*name).to_owned(),
            url: format!("{}/tenantry", c.url()),
            weight: 1.0,
        })
        .collect();
    let app = TestApp::spawn_with(tempfile::tempdir().expect("dir"), move |s| {
        s.placement.servers = servers;
    })
    .await;
    let staff = app.admin_token().await;
    let t = app
        .post(
            "/api/v1/tenants",
            Some(&staff),
            json!({"name": "Loaded", "slug": "loaded", "plan": "custom",
                   "isolation": "shared"}),
        )
        .await;
    assert_eq!(t.status, 201, "{}", t.text);
    let id: uuid::Uuid = t.body["id"].as_str().expect("id").parse().expect("uuid");
    let (_, token) = app
        .tenant_user(&staff, "loaded", "w@loaded.example", "admin")
        .await;
    let shown = app.get("/api/v1/tenants/loaded", Some(&staff)).await;
    let first = shown.body["placement"]
        .as_str()
        .expect("placement")
        .to_owned();
    let other = |name: &str| if name == "pg-a" { "pg-b" } else { "pg-a" };
    let index = |name: &str| usize::from(name == "pg-b");

    // Shared on one server → shared on the other.
    let second = other(&first);
    move_under_load(
        &app,
        &staff,
        &token,
        "loaded",
        "servers",
        json!({"server": second}),
    )
    .await;
    assert_eq!(shared_records_on(&clusters[index(&first)], id).await, 0);
    assert!(shared_records_on(&clusters[index(second)], id).await > 0);

    // Back, and to a database of its own there, in one move.
    let body = json!({"server": first, "isolation": "dedicated"});
    move_under_load(&app, &staff, &token, "loaded", "both", body).await;
    assert_eq!(shared_records_on(&clusters[index(second)], id).await, 0);
    let mut owner = PgConnection::connect(&format!("{}/postgres", clusters[index(&first)].url()))
        .await
        .expect("connect");
    let databases: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = 'tenantry_' || $1")
            .bind(id.simple().to_string())
            .fetch_one(&mut owner)
            .await
            .expect("pg_database");
    assert_eq!(databases, 1, "a database of its own on {first}");
}
