//! libFuzzer on `properties::slug` (what it checks is written there).
#![no_main]
#[path = "../properties.rs"]
mod properties;

libfuzzer_sys::fuzz_target!(|data: &[u8]| properties::slug(data));
