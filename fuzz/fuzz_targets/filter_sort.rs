//! The record list's query string: any input parses or is refused, never
//! a panic; whatever parses has a limit within bounds.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(query) = std::str::from_utf8(data)
        && let Ok(params) = tenantry_server::api::collections::list_params(Some(query))
    {
        let _ = format!("{params:?}");
    }
});
