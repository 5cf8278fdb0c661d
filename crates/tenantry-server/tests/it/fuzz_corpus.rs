//! The fuzz targets' properties over their committed corpora, on every test
//! run: inputs libFuzzer kept for new coverage (and any that once crashed)
//! stay regression tests without nightly Rust. Coverage-guided runs that
//! look for new inputs are `fuzz/run.sh`.

#[path = "../../../../fuzz/properties.rs"]
mod properties;

use std::path::PathBuf;

/// Every input of one target's corpus, through its property.
fn replay(target: &str, property: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("entry").path();
        let data = std::fs::read(&path).expect("read input");
        let outcome = std::panic::catch_unwind(|| property(&data));
        assert!(outcome.is_ok(), "{target}: {} fails", path.display());
        inputs += 1;
    }
    assert!(inputs > 0, "{target}: empty corpus");
}

#[test]
fn record_list_queries_of_the_corpus_parse_or_are_refused() {
    replay("filter_sort", properties::filter_sort);
}

#[test]
fn merge_patches_of_the_corpus_are_idempotent() {
    replay("merge_patch", properties::merge_patch);
}

#[test]
fn slugs_of_the_corpus_hold_their_rules() {
    replay("slug", properties::slug);
}

#[test]
fn tenant_headers_of_the_corpus_never_count_untrusted_forwarding() {
    replay("tenant_headers", properties::tenant_headers);
}
