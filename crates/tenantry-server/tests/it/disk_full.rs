//! A full disk (a small tmpfs as the data dir): writes answer 503 with
//! Retry-After, not 500; nothing acknowledged is lost or corrupted; once
//! there is room again the server writes as before, without a restart.
//! SQLite only: the data dir is where its files live.

use crate::support::TestApp;
use crate::tmpfs::{Tmpfs, fill_then_free};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_a_503_and_room_again_is_recovery() {
    let Some(disk) = Tmpfs::mount(24) else {
        return;
    };
    let data = disk.path().join("data");
    std::fs::create_dir(&data).expect("data dir");
    let ballast = disk.ballast(4);
    let app = TestApp::spawn_with(tempfile::tempdir().expect("dir"), |s| {
        s.data_dir = data.clone();
    })
    .await;
    let text = "x".repeat(200_000);
    fill_then_free(&app, &ballast, || text.clone()).await;
}
