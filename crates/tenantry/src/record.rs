//! Collections and records: the tenant data plane's model and query language.

use crate::ids::{RecordId, UserId};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

/// `[a-z][a-z0-9_]{0,62}`.
pub fn valid_collection_name(name: &str) -> bool {
    let mut chars = name.chars();
    (1..=63).contains(&name.len())
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// A field path: dot-separated identifiers (`status`, `address.ward`).
pub fn valid_field(field: &str) -> bool {
    (1..=128).contains(&field.len())
        && field.split('.').all(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

/// The JSON path of a validated field.
pub fn json_path(field: &str) -> String {
    format!("$.{field}")
}

/// Looks a dotted field up in a record's data.
pub fn field_value<'a>(data: &'a Value, field: &str) -> Option<&'a Value> {
    field.split('.').try_fold(data, |v, part| v.get(part))
}

/// Applies an RFC 7396 JSON merge patch: objects merge key by key, `null`
/// removes a key, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    if let Value::Object(t) = target {
        for (k, v) in patch {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// The audit resource of a collection's definition. The data chain's
/// resources name what each entry changed: a move catches up on a tenant's
/// writes by reading them back (`touched`), so every data write records one
/// of these two.
pub fn collection_resource(collection: &str) -> String {
    format!("collections/{collection}")
}

/// The audit resource of one record.
pub fn record_resource(collection: &str, id: RecordId) -> String {
    format!("collections/{collection}/records/{id}")
}

/// What a data-chain entry changed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Touched {
    Collection(String),
    Record(String, RecordId),
}

/// Reads `collection_resource` and `record_resource` back.
pub fn touched(resource: &str) -> Option<Touched> {
    let rest = resource.strip_prefix("collections/")?;
    match rest.split_once("/records/") {
        Some((collection, id)) => Some(Touched::Record(collection.to_owned(), id.parse().ok()?)),
        None if !rest.contains('/') => Some(Touched::Collection(rest.to_owned())),
        None => None,
    }
}

/// A collection's definition.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CollectionDef {
    pub name: String,
    #[schema(value_type = Option<Object>)]
    pub schema: Option<Value>,
    pub unique: Vec<String>,
    pub indexed: Vec<String>,
    pub required_feature: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl CollectionDef {
    /// The definition a first write creates: no schema, no unique or
    /// indexed fields, no required feature.
    pub fn implicit(name: &str, at: DateTime<Utc>) -> Self {
        Self {
            name: name.to_owned(),
            schema: None,
            unique: Vec::new(),
            indexed: Vec::new(),
            required_feature: None,
            created_at: at,
            updated_at: at,
        }
    }
}

/// One record.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Record {
    pub id: RecordId,
    #[schema(value_type = Object)]
    pub data: Value,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub created_by: Option<UserId>,
}

/// A filter operand: numbers compare with numeric fields, anything else with strings.
#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    Number(f64),
    Text(String),
}

impl Operand {
    pub fn parse(raw: &str) -> Self {
        match serde_json::from_str::<Value>(raw) {
            Ok(Value::Number(n)) => n
                .as_f64()
                .map_or_else(|| Operand::Text(raw.to_owned()), Operand::Number),
            _ => Operand::Text(raw.to_owned()),
        }
    }

    /// Whether a stored JSON value equals this operand (typed).
    pub fn matches(&self, v: &Value) -> bool {
        self.compare(v) == Some(std::cmp::Ordering::Equal)
    }

    /// Typed comparison of a stored value against this operand; `None` when types differ.
    pub fn compare(&self, v: &Value) -> Option<std::cmp::Ordering> {
        match (self, v) {
            (Operand::Number(n), Value::Number(m)) => m.as_f64()?.partial_cmp(n),
            (Operand::Text(s), Value::String(t)) => Some(t.as_str().cmp(s.as_str())),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterOp {
    Eq,
    Ne,
    Gte,
    Lte,
    In,
}

impl FilterOp {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "eq" => FilterOp::Eq,
            "ne" => FilterOp::Ne,
            "gte" => FilterOp::Gte,
            "lte" => FilterOp::Lte,
            "in" => FilterOp::In,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Filter {
    pub field: String,
    pub op: FilterOp,
    /// One operand, or several for `in`.
    pub operands: Vec<Operand>,
}

impl Filter {
    /// The same predicate in memory (the isolation oracle's model uses it).
    pub fn accepts(&self, data: &Value) -> bool {
        use std::cmp::Ordering::*;
        let v = field_value(data, &self.field);
        let first = &self.operands[0];
        match self.op {
            FilterOp::Eq => v.is_some_and(|v| first.matches(v)),
            FilterOp::Ne => !v.is_some_and(|v| first.matches(v)),
            FilterOp::Gte => v.and_then(|v| first.compare(v)).is_some_and(|o| o != Less),
            FilterOp::Lte => v
                .and_then(|v| first.compare(v))
                .is_some_and(|o| o != Greater),
            FilterOp::In => v.is_some_and(|v| self.operands.iter().any(|o| o.matches(v))),
        }
    }
}

/// What a list is ordered by.
#[derive(Clone, Debug, PartialEq)]
pub enum SortKey {
    CreatedAt,
    UpdatedAt,
    /// An indexed field of the collection.
    Field(String),
}

/// Where a page starts: the sort key value and id of the last record seen.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RecordCursor {
    pub key: Value,
    pub id: RecordId,
}

#[derive(Clone, Debug)]
pub struct RecordQuery {
    pub filters: Vec<Filter>,
    pub sort: SortKey,
    pub descending: bool,
    pub after: Option<RecordCursor>,
    pub limit: u32,
}

/// The sort key's value for a record, as the cursor carries it.
pub fn sort_value(record: &Record, sort: &SortKey) -> Value {
    match sort {
        SortKey::CreatedAt => Value::String(crate::timestamp::time_text(record.created_at)),
        SortKey::UpdatedAt => Value::String(crate::timestamp::time_text(record.updated_at)),
        // Mirrors SQLite's coalesce(json_extract(...), ''), which the SQL sorts by.
        SortKey::Field(f) => match field_value(&record.data, f) {
            Some(v @ (Value::Number(_) | Value::String(_))) => v.clone(),
            Some(Value::Bool(b)) => Value::from(i64::from(*b)),
            Some(v @ (Value::Object(_) | Value::Array(_))) => Value::String(v.to_string()),
            Some(Value::Null) | None => Value::String(String::new()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_and_fields() {
        assert!(valid_collection_name("complaints"));
        assert!(valid_collection_name("a1_b"));
        assert!(!valid_collection_name("1abc"));
        assert!(!valid_collection_name("Complaints"));
        assert!(!valid_collection_name(&"a".repeat(64)));
        assert!(valid_field("status"));
        assert!(valid_field("address.ward_no"));
        assert!(!valid_field("a..b"));
        assert!(!valid_field("x'); DROP TABLE records; --"));
        assert!(!valid_field("$.a"));
    }

    #[test]
    fn resources_read_back_as_what_they_name() {
        let id = RecordId::new();
        assert_eq!(
            touched(&record_resource("complaints", id)),
            Some(Touched::Record("complaints".into(), id))
        );
        assert_eq!(
            touched(&collection_resource("complaints")),
            Some(Touched::Collection("complaints".into()))
        );
        assert_eq!(touched("tenants/x"), None);
        assert_eq!(touched("collections/a/records/not-an-id"), None);
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        // The RFC's own example.
        let mut doc = json!({"title": "Goodbye!", "author": {"givenName": "John", "familyName": "Doe"},
                             "tags": ["example", "sample"], "content": "This will be unchanged"});
        merge_patch(
            &mut doc,
            &json!({"title": "Hello!", "phoneNumber": "+01-123-456-7890",
                                      "author": {"familyName": null}, "tags": ["example"]}),
        );
        assert_eq!(
            doc,
            json!({"title": "Hello!", "author": {"givenName": "John"}, "tags": ["example"],
                               "content": "This will be unchanged", "phoneNumber": "+01-123-456-7890"})
        );
        let mut scalar = json!({"a": 1});
        merge_patch(&mut scalar, &json!(["x"]));
        assert_eq!(scalar, json!(["x"]));
    }

    #[test]
    fn operands_are_typed() {
        let f = |op, raw: &str| Filter {
            field: "v".into(),
            op,
            operands: vec![Operand::parse(raw)],
        };
        assert!(f(FilterOp::Eq, "7").accepts(&json!({"v": 7})));
        assert!(f(FilterOp::Eq, "7").accepts(&json!({"v": 7.0})));
        assert!(!f(FilterOp::Eq, "7").accepts(&json!({"v": "7"})));
        assert!(
            !f(FilterOp::Eq, "007").accepts(&json!({"v": 7})),
            "007 is not a JSON number, so text"
        );
        assert!(f(FilterOp::Eq, "007").accepts(&json!({"v": "007"})));
        assert!(!f(FilterOp::Eq, "\"007\"").accepts(&json!({"v": "007"})));
        assert!(f(FilterOp::Gte, "10").accepts(&json!({"v": 10})));
        assert!(!f(FilterOp::Gte, "10").accepts(&json!({"v": 9})));
        assert!(f(FilterOp::Lte, "b").accepts(&json!({"v": "a"})));
        assert!(
            f(FilterOp::Ne, "x").accepts(&json!({})),
            "missing fields are not equal"
        );
    }
}
