//! What each fuzz target checks, as plain functions: the targets in
//! `fuzz_targets/` run them under libFuzzer, and the workspace's tests
//! (`tests/it/fuzz_corpus.rs`) run them over the committed corpora on every
//! test run, so an input that once found a bug stays a regression test.

use serde_json::Value;
use tenantry::resolve::ResolverConfig;

/// The record list's query string: any input parses or is refused, never
/// a panic; whatever parses has a limit within bounds.
pub fn filter_sort(data: &[u8]) {
    if let Ok(query) = std::str::from_utf8(data)
        && let Ok(params) = tenantry_server::api::collections::list_params(Some(query))
    {
        let _ = format!("{params:?}");
    }
}

/// RFC 7396 merge patch: never panics, and a patch applied twice gives
/// what it gave once (merge patches are idempotent).
pub fn merge_patch(data: &[u8]) {
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
}

/// Slugs: whatever `Slug::parse` accepts is a DNS label of the allowed
/// alphabet that cannot be taken for a tenant id.
pub fn slug(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(slug) = tenantry::Slug::parse(text) {
        let s = slug.as_str();
        assert!((3..=63).contains(&s.len()));
        assert!(
            s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        );
        assert!(!s.starts_with('-') && !s.ends_with('-'));
        assert!(
            s.parse::<tenantry::TenantId>().is_err(),
            "{s} reads as an id"
        );
    }
}

const HEADER_NAMES: [&str; 5] = [
    "host",
    "x-tenant-id",
    "x-tenant-slug",
    "x-forwarded-host",
    "host",
];

/// Tenant indicators from headers and the query: arbitrary header values
/// (repeated, odd hosts, forwarded hosts from a trusted peer or not) never
/// panic, and an untrusted peer's X-Forwarded-Host never counts.
pub fn tenant_headers(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\u{1}');
    let query = parts.next();
    let mut headers = http::HeaderMap::new();
    for (i, value) in parts.enumerate() {
        if let Ok(v) = http::HeaderValue::from_str(value) {
            headers.append(HEADER_NAMES[i % HEADER_NAMES.len()], v);
        }
    }
    let trusted: std::net::IpAddr = "10.0.0.1".parse().expect("ip");
    let config = ResolverConfig {
        base_domain: Some("tenants.example".into()),
        trusted_proxies: vec![trusted],
        multi_tenant: true,
    };
    let _ = config.indicators(&headers, query, Some(trusted));
    let client = Some("192.0.2.1".parse().expect("ip"));
    let from_client = config.indicators(&headers, query, client);
    headers.remove("x-forwarded-host");
    let without = config.indicators(&headers, query, client);
    assert_eq!(
        from_client, without,
        "an untrusted peer's X-Forwarded-Host counted"
    );
}
