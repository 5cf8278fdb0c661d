//! A small tmpfs for disk-full tests, and the scenario both engines' tests
//! run on it. Mounting needs root; without it the test is skipped, unless
//! `CI=true`, where that is a failure.

use crate::support::TestApp;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of a few MiB, unmounted when dropped.
pub struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    pub fn mount(mb: u32) -> Option<Self> {
        let dir = tempfile::tempdir().expect("dir");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if mounted {
            return Some(Self(dir));
        }
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true and a tmpfs cannot be mounted (the disk-full tests need root)");
        }
        eprintln!("skipping: cannot mount a tmpfs (not root?)");
        None
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// A file of `mb` MiB on the tmpfs: room to give back later.
    pub fn ballast(&self, mb: usize) -> PathBuf {
        let path = self.path().join("ballast");
        std::fs::write(&path, vec![0u8; mb << 20]).expect("ballast");
        path
    }
}

/// A tenant writes records carrying `text()` until one is refused: 503
/// `unavailable` with Retry-After, not 500. Then `ballast` is removed: the
/// next write succeeds, without a restart, and every acknowledged record is
/// there with the data it was sent.
pub async fn fill_then_free(app: &TestApp, ballast: &Path, text: impl Fn() -> String) {
    let staff = app.admin_token().await;
    app.create_busy_tenant(&staff, "full-disk", "shared").await;
    let (_, token) = app
        .tenant_user(&staff, "full-disk", "a@full-disk.example", "admin")
        .await;
    let mut acked = Vec::new();
    let mut refused = None;
    for n in 0..400 {
        let res = app
            .post(
                "/api/v1/collections/notes/records",
                Some(&token),
                json!({"n": n, "text": text()}),
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

    std::fs::remove_file(ballast).expect("free space");
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

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}
