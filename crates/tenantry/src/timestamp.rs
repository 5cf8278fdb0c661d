//! Timestamps as text, one format for every engine and every cursor.

use chrono::{DateTime, Utc};

/// Fixed-width RFC 3339 (microseconds, `Z`): text order is time order, which
/// keyset pagination over timestamps relies on.
pub fn time_text(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}
