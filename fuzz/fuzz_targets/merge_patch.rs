//! RFC 7396 merge patch: never panics, and a patch applied twice gives
//! what it gave once (merge patches are idempotent).
#![no_main]
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (target, patch) = text.split_once('\u{1}').unwrap_or((&text, "{}"));
    let (Ok(mut target), Ok(patch)) = (
        serde_json::from_str::<Value>(target),
        serde_json::from_str::<Value>(patch),
    ) else {
        return;
    };
    tenantry::record::merge_patch(&mut target, &patch);
    let once = target.clone();
    tenantry::record::merge_patch(&mut target, &patch);
    assert_eq!(
        once, target,
        "a merge patch applied twice must change nothing more"
    );
});
