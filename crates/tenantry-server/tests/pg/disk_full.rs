//! A full disk on PostgreSQL: the tenant data's tablespace on a small tmpfs
//! (the WAL stays on the cluster's own disk, as a data volume filling up
//! before the log's does). Writes answer 503 with Retry-After, not 500;
//! nothing acknowledged is lost; once there is room again writes succeed
//! without a restart. (SQLite's twin is `tests/it/disk_full.rs`.)

use crate::pg::{Cluster, as_postgres_owner, free_port};
use crate::support::TestApp;
use crate::tmpfs::{Tmpfs, fill_then_free};
use base64::Engine;
use rand::RngCore;
use sqlx::{Connection, PgConnection};
use tenantry::placement::Server;

/// About `bytes` of text PostgreSQL cannot compress away.
fn incompressible(bytes: usize) -> String {
    let mut raw = vec![0u8; bytes * 3 / 4];
    rand::thread_rng().fill_bytes(&mut raw);
    base64::engine::general_purpose::STANDARD.encode(raw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_data_volume_is_a_503_and_room_again_is_recovery() {
    let Some(disk) = Tmpfs::mount(16) else {
        return;
    };
    let space = disk.path().join("tablespace");
    std::fs::create_dir(&space).expect("tablespace dir");
    as_postgres_owner(&space);
    let ballast = disk.ballast(4);

    // Every table made on this cluster from now on lives on the tmpfs.
    let cluster = Cluster::start(free_port()).await;
    let mut admin = PgConnection::connect(&format!("{}/postgres", cluster.url()))
        .await
        .expect("connect");
    for statement in [
        format!("CREATE TABLESPACE small LOCATION '{}'", space.display()),
        "GRANT CREATE ON TABLESPACE small TO PUBLIC".to_owned(),
        "ALTER SYSTEM SET default_tablespace = 'small'".to_owned(),
        "SELECT pg_reload_conf()".to_owned(),
    ] {
        sqlx::raw_sql(&statement)
            .execute(&mut admin)
            .await
            .expect(&statement);
    }
    let url = format!("{}/tenantry", cluster.url());
    let app = TestApp::spawn_with(tempfile::tempdir().expect("dir"), move |s| {
        s.placement.servers = vec![Server {
            name: "small".into(),
            url,
            weight: 1.0,
        }];
    })
    .await;
    fill_then_free(&app, &ballast, || incompressible(100_000)).await;
}
