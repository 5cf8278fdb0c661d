//! Tenant indicators from headers and the query: arbitrary header values
//! (repeated, odd hosts, forwarded hosts from a trusted peer or not) never
//! panic, and an untrusted peer's X-Forwarded-Host never counts.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tenantry::resolve::ResolverConfig;

const NAMES: [&str; 5] = [
    "host",
    "x-tenant-id",
    "x-tenant-slug",
    "x-forwarded-host",
    "host",
];

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\u{1}');
    let query = parts.next();
    let mut headers = http::HeaderMap::new();
    for (i, value) in parts.enumerate() {
        if let Ok(v) = http::HeaderValue::from_str(value) {
            headers.append(NAMES[i % NAMES.len()], v);
        }
    }
    let trusted: std::net::IpAddr = "10.0.0.1".parse().expect("ip");
    let config = ResolverConfig {
        base_domain: Some("tenants.example".into()),
        trusted_proxies: vec![trusted],
        multi_tenant: true,
    };
    let from_proxy = config.indicators(&headers, query, Some(trusted));
    let from_client = config.indicators(&headers, query, Some("192.0.2.1".parse().expect("ip")));
    headers.remove("x-forwarded-host");
    let without = config.indicators(&headers, query, Some("192.0.2.1".parse().expect("ip")));
    assert_eq!(
        from_client, without,
        "an untrusted peer's X-Forwarded-Host counted"
    );
    let _ = from_proxy;
});
