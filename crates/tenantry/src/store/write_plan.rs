//! The record-write plan, decided once for both engines: a write's version
//! check, its size against the storage quota, the unique values it claims
//! and the usage it adds. A backend reads what the plan needs inside the
//! write's transaction (the tenant's stored bytes, the row's version and
//! size, the collection's unique fields), asks the plan, and executes what
//! the answer names in that same transaction — the row, the claims, the
//! usage delta, the audit entry. No backend decides any of it itself.

use super::{StoreError, StoreResult, check_quota};
use crate::record::field_value;
use serde_json::Value;

/// A stored row as a write sees it: its version and its size in bytes.
pub type StoredRow = (i64, i64);

/// What a checked write changes besides the row itself.
#[derive(Debug, PartialEq, Eq)]
pub struct Planned {
    /// Drop the record's unique claims first (an update or a delete).
    pub release: bool,
    /// The `(field, key)` claims to take after the row is written.
    pub claims: Vec<(String, String)>,
    /// Usage delta: records and bytes.
    pub records: i64,
    pub bytes: i64,
}

/// The quota's unit: the bytes of a record's data as the API serialises it.
pub fn record_size(data: &Value) -> i64 {
    data.to_string().len() as i64
}

/// The claimed form of a unique value: its JSON text, or for a long one (a
/// B-tree entry holds about 2700 bytes on PostgreSQL) a digest of it, which
/// no JSON text can spell. Both engines claim this same key.
pub fn unique_key(value: &Value) -> String {
    use sha2::{Digest, Sha256};
    let text = value.to_string();
    if text.len() <= 1024 {
        return text;
    }
    format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes())))
}

/// The claims a record's data takes among the `unique` fields: one per
/// field that holds a value (absent and null values claim nothing).
pub fn unique_claims(data: &Value, unique: &[String]) -> Vec<(String, String)> {
    unique
        .iter()
        .filter_map(|field| {
            field_value(data, field)
                .filter(|v| !v.is_null())
                .map(|v| (field.clone(), unique_key(v)))
        })
        .collect()
}

/// A new record of `size` bytes, into a tenant storing `used` bytes.
pub fn insert(
    data: &Value,
    size: i64,
    unique: &[String],
    used: u64,
    max_storage: Option<u64>,
) -> StoreResult<Planned> {
    check_quota(used, size, max_storage)?;
    Ok(Planned {
        release: false,
        claims: unique_claims(data, unique),
        records: 1,
        bytes: size,
    })
}

/// A record's new data of `size` bytes over the `stored` row, which must
/// exist at version `expected`; only growth counts against the quota.
pub fn update(
    data: &Value,
    size: i64,
    unique: &[String],
    used: u64,
    stored: Option<StoredRow>,
    expected: i64,
    max_storage: Option<u64>,
) -> StoreResult<Planned> {
    let (version, old_size) = stored.ok_or(StoreError::NotFound)?;
    if version != expected {
        return Err(StoreError::VersionMismatch);
    }
    let delta = size - old_size;
    check_quota(used, delta, max_storage)?;
    Ok(Planned {
        release: true,
        claims: unique_claims(data, unique),
        records: 0,
        bytes: delta,
    })
}

/// The removal of the `stored` row, at version `expected` when one is given.
pub fn delete(stored: Option<StoredRow>, expected: Option<i64>) -> StoreResult<Planned> {
    let (version, size) = stored.ok_or(StoreError::NotFound)?;
    if expected.is_some_and(|e| e != version) {
        return Err(StoreError::VersionMismatch);
    }
    Ok(Planned {
        release: true,
        claims: Vec::new(),
        records: -1,
        bytes: -size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn an_insert_claims_the_unique_values_it_holds_and_counts_its_bytes() {
        let data = json!({"email": "a@x", "team": {"code": 7}, "nick": null});
        let size = record_size(&data);
        let plan = insert(
            &data,
            size,
            &fields(&["email", "team.code", "nick", "gone"]),
            0,
            None,
        )
        .expect("plan");
        assert_eq!(
            plan,
            Planned {
                release: false,
                claims: vec![
                    ("email".into(), "\"a@x\"".into()),
                    ("team.code".into(), "7".into())
                ],
                records: 1,
                bytes: size,
            }
        );
    }

    #[test]
    fn the_quota_refuses_growth_only() {
        let data = json!({"a": 1});
        assert_eq!(
            insert(&data, 10, &[], 95, Some(100)),
            Err(StoreError::QuotaExceeded)
        );
        assert!(insert(&data, 5, &[], 95, Some(100)).is_ok());
        // Over the quota already, a shrinking update passes; growth does not.
        let shrink = update(&data, 4, &[], 120, Some((3, 10)), 3, Some(100)).expect("shrink");
        assert_eq!(
            (shrink.records, shrink.bytes, shrink.release),
            (0, -6, true)
        );
        assert_eq!(
            update(&data, 11, &[], 120, Some((3, 10)), 3, Some(100)),
            Err(StoreError::QuotaExceeded)
        );
    }

    #[test]
    fn versions_are_checked_before_anything_changes() {
        let data = json!({});
        assert_eq!(
            update(&data, 2, &[], 0, None, 1, None),
            Err(StoreError::NotFound)
        );
        assert_eq!(
            update(&data, 2, &[], 0, Some((2, 2)), 1, None),
            Err(StoreError::VersionMismatch)
        );
        assert_eq!(delete(None, None), Err(StoreError::NotFound));
        assert_eq!(
            delete(Some((2, 9)), Some(1)),
            Err(StoreError::VersionMismatch)
        );
        let gone = delete(Some((2, 9)), None).expect("unconditional delete");
        assert_eq!((gone.records, gone.bytes, gone.release), (-1, -9, true));
        assert!(gone.claims.is_empty());
    }

    #[test]
    fn long_unique_values_are_claimed_by_digest() {
        let long = json!("x".repeat(2000));
        let key = unique_key(&long);
        assert!(key.starts_with("sha256:") && key.len() < 100, "{key}");
        assert_eq!(unique_key(&json!("short")), "\"short\"");
    }
}
