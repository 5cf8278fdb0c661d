//! Slugs: whatever `Slug::parse` accepts is a DNS label of the allowed
//! alphabet that cannot be taken for a tenant id.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
});
