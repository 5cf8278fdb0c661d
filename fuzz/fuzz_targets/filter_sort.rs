//! libFuzzer on `properties::filter_sort` (what it checks is written there).
#![no_main]
#[path = "../properties.rs"]
mod properties;

libfuzzer_sys::fuzz_target!(|data: &[u8]| properties::filter_sort(data));
