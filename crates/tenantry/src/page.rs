//! Keyset pagination shared by every list: the page size bounds and the
//! cursor's wire form (URL-safe base64 of whatever key the list orders by).
//! A cursor is opaque to clients; what it holds is each list's own business.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Items per page when the client does not say.
pub const DEFAULT_LIMIT: u32 = 50;
/// Larger requests are clamped to this.
pub const MAX_LIMIT: u32 = 500;

/// The page size for a requested `limit`: the default, clamped to 1..=MAX.
pub fn limit(asked: Option<u32>) -> u32 {
    asked.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
}

/// A cursor carrying `key`.
pub fn encode_cursor(key: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(key)
}

/// The key a cursor carries; `None` when it is not one `encode_cursor` made.
pub fn decode_cursor(cursor: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(cursor).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_default_and_clamp() {
        assert_eq!(limit(None), DEFAULT_LIMIT);
        assert_eq!(limit(Some(0)), 1);
        assert_eq!(limit(Some(7)), 7);
        assert_eq!(limit(Some(u32::MAX)), MAX_LIMIT);
    }

    #[test]
    fn cursors_round_trip_and_refuse_what_they_did_not_make() {
        let key = b"\x00name\xff";
        assert_eq!(
            decode_cursor(&encode_cursor(key)).as_deref(),
            Some(&key[..])
        );
        assert_eq!(decode_cursor("not base64!"), None);
    }
}
