//! SQL building for the data plane: row decoding, sort keys and keyset
//! cursors, filter comparisons, index names.

use crate::record::{CollectionDef, Operand, Record, SortKey, json_path};
use crate::store::{StoreError, StoreResult, parse_time, strings};
use serde_json::Value;

/// A collection definition as stored.
pub(super) type CollectionRow = (
    String,
    Option<String>,
    String,
    String,
    Option<String>,
    String,
    String,
);

pub(super) const COLLECTION_COLUMNS: &str =
    "name, schema, unique_fields, indexed_fields, required_feature, created_at, updated_at";

pub(super) fn read_collection(r: &rusqlite::Row<'_>) -> rusqlite::Result<CollectionRow> {
    r.try_into()
}

pub(super) fn collection_def(row: CollectionRow) -> StoreResult<CollectionDef> {
    let (name, schema, unique, indexed, required_feature, created_at, updated_at) = row;
    let json = |text: &str, what: &str| {
        serde_json::from_str::<Value>(text)
            .map_err(|e| StoreError::Internal(format!("bad json in {what}: {e}")))
    };
    Ok(CollectionDef {
        name,
        schema: schema.map(|s| json(&s, "schema")).transpose()?,
        unique: strings(json(&unique, "unique_fields")?),
        indexed: strings(json(&indexed, "indexed_fields")?),
        required_feature,
        created_at: parse_time(&created_at)?,
        updated_at: parse_time(&updated_at)?,
    })
}

/// The SQL of a sort key. Field names come from the collection's stored
/// definition (validated when it was defined), never from the request, and
/// match the expression of the index created for them.
pub(super) fn sort_sql(key: &SortKey) -> String {
    match key {
        SortKey::CreatedAt => "created_at".to_owned(),
        SortKey::UpdatedAt => "updated_at".to_owned(),
        SortKey::Field(f) => format!("coalesce(json_extract(data, '{}'), '')", json_path(f)),
    }
}

pub(super) fn index_name(field: &str) -> String {
    format!("records_f_{}", field.replace('.', "__"))
}

/// The columns `RecordRow` reads, in its order.
pub(super) const RECORD_COLUMNS: &str = "id, data, version, created_at, updated_at, created_by";

/// A record as the in-place reader fetches it (decoded outside the lock).
pub(super) struct RecordRow(
    pub(super) String,
    pub(super) String,
    pub(super) i64,
    pub(super) String,
    pub(super) String,
    pub(super) Option<String>,
);

impl RecordRow {
    pub(super) fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        let (id, data, version, created_at, updated_at, created_by) = r.try_into()?;
        Ok(Self(id, data, version, created_at, updated_at, created_by))
    }

    pub(super) fn record(self) -> StoreResult<Record> {
        let RecordRow(id, data, version, created_at, updated_at, created_by) = self;
        Ok(Record {
            id: id
                .parse()
                .map_err(|_| StoreError::Internal(format!("bad record id {id:?}")))?,
            data: serde_json::from_str(&data)
                .map_err(|e| StoreError::Internal(format!("bad json in data: {e}")))?,
            version,
            created_at: parse_time(&created_at)?,
            updated_at: parse_time(&updated_at)?,
            created_by: created_by.and_then(|c| c.parse().ok()),
        })
    }
}

/// SQL with `?` placeholders and the values bound to them, built together
/// so a value never lands in the SQL text.
#[derive(Default)]
pub(super) struct Sql {
    pub(super) text: String,
    pub(super) params: Vec<rusqlite::types::Value>,
}

impl Sql {
    pub(super) fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    pub(super) fn bind(&mut self, value: impl Into<rusqlite::types::Value>) -> &mut Self {
        self.text.push('?');
        self.params.push(value.into());
        self
    }

    pub(super) fn bind_operand(&mut self, op: &Operand) -> &mut Self {
        match op {
            Operand::Number(n) => self.bind(*n),
            Operand::Text(s) => self.bind(s.clone()),
        }
    }

    /// A sort key value of a cursor, as its column compares.
    pub(super) fn bind_key(&mut self, key: &Value) -> &mut Self {
        match key {
            Value::Number(n) => self.bind(n.as_f64().unwrap_or(0.0)),
            Value::String(s) => self.bind(s.clone()),
            other => self.bind(other.to_string()),
        }
    }

    /// A typed comparison of a JSON field: numbers compare with numbers,
    /// text with text, and a field of another type never matches.
    pub(super) fn compare(&mut self, path: &str, cmp: &str, op: &Operand) -> &mut Self {
        let types = match op {
            Operand::Number(_) => "('integer', 'real')",
            Operand::Text(_) => "('text')",
        };
        self.push("coalesce(json_type(data, ")
            .bind(path.to_owned())
            .push(") IN ")
            .push(types)
            .push(" AND json_extract(data, ")
            .bind(path.to_owned())
            .push(") ")
            .push(cmp)
            .push(" ")
            .bind_operand(op)
            .push(", 0)")
    }
}
