//! A full disk (a small tmpfs as the data dir): writes answer 503 with
//! Retry-After, not 500; nothing acknowledged is lost or corrupted; once
//! there is room again the server writes as before, without a restart.
//! SQLite only: the data dir is where its files live.

use crate::support::TestApp;
use crate::tmpfs::Tmpfs;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_a_503_and_room_again_is_recovery() {
    let Some(disk) = Tmpfs::mount(24) else {
        return;
    };
    let data = disk.path().join("data");
    std::fs::create_dir(&data).expect("data dir");
    // Room to give back later.
    let ballast = disk.path().join("ballast");
    std::fs::write(&ballast, vec![0u8; 4 << 20]).expect("ballast");
    let app = TestApp::spawn_with(tempfile::tempdir().expect("dir"), |s| {
        s.data_dir = data.clone();
    })
    .await;
    let staff = app.admin_token().await;
    app.create_busy_tenant(&staff, "full-disk", "shared").await;
    let (_, token) = app
        .tenant_user(&staff, "full-disk", "a@full-disk.example", "admin")
        .await;
    let text = "x".repeat(200_000);
    let mut acked = Vec::new();
    let mut refused = None;
    for n in 0..400 {
        let res = app
            .post(
                "/api/v1/collections/notes/records",
                Some(&token),
                json!({"n": n, "text": text}),
            )
            .await;
        match res.status.as_u16() {
            201 => acked.push((res.body["id"].as_str().expect("id").to_owned(), n)),
            _ => {
                refused = Some(res);
                break;
            }
        }
    }
    let refused = refused.expect("the disk filled up");
    refused.assert_problem(503, "unavailable");
    assert!(refused.headers.contains_key("retry-after"));
    assert!(!acked.is_empty());
    // Room again: the next write succeeds, and what was acknowledged is there.
    std::fs::remove_file(&ballast).expect("free space");
    let res = app
        .post(
            "/api/v1/collections/notes/records",
            Some(&token),
            json!({"n": -1}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    for (id, n) in &acked {
        let res = app
            .get(
                &format!("/api/v1/collections/notes/records/{id}"),
                Some(&token),
            )
            .await;
        assert_eq!(res.status, 200, "acknowledged {id} lost: {}", res.text);
        assert_eq!(res.body["data"]["n"], *n);
    }
}
