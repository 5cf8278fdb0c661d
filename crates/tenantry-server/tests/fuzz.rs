//! Coverage-guided fuzzing of the parsers of outside input, for a bounded
//! time (`fuzz/run.sh`: 60 s per target on its committed corpus, nightly
//! Rust and cargo-fuzz). A binary of its own: cargo runs test binaries one
//! at a time, so it never runs beside the suites' timing-sensitive tests.
//! Under `CI=true` it always runs, and anything missing fails it; elsewhere
//! it runs when `TENANTRY_FUZZ=1` (a cold build of the targets takes
//! minutes).

use std::path::PathBuf;
use std::process::Command;

#[test]
fn fuzz_targets_find_no_crash_in_a_bounded_run() {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let asked = std::env::var("TENANTRY_FUZZ").is_ok_and(|v| v == "1");
    if !ci && !asked {
        eprintln!("fuzzing skipped: it runs under CI=true, or with TENANTRY_FUZZ=1");
        return;
    }
    let seconds = std::env::var("TENANTRY_FUZZ_SECONDS").unwrap_or_else(|_| "60".into());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/run.sh");
    let mut run = Command::new("bash");
    run.arg(&script).arg(&seconds);
    // What this test's cargo set for it would steer the nightly build.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if (key.starts_with("CARGO") && key != "CARGO_HOME")
            || key == "RUSTUP_TOOLCHAIN"
            || key == "RUSTC"
        {
            run.env_remove(key);
        }
    }
    let status = run
        .status()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        status.success(),
        "fuzzing failed ({status}): a crashing input is kept under fuzz/artifacts/<target>/"
    );
}
