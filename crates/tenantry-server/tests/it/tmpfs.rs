//! A small tmpfs for disk-full tests: mounting needs root; without it the
//! test is skipped, unless `CI=true`, where that is a failure.

use std::path::Path;
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
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}
