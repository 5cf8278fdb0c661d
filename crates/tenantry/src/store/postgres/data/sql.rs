//! SQL building for the data plane: row decoding, JSON paths of fields,
//! filter comparisons, sort keys and keyset cursors, index DDL.

use crate::ids::RecordId;
use crate::record::{CollectionDef, Operand, Record};
use crate::store::postgres::{DATA_SCHEMA, pg_error};
use crate::store::{StoreResult, strings, time_text};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres, QueryBuilder, Row};
use uuid::Uuid;

pub(super) fn collection_from_row(row: &PgRow) -> StoreResult<CollectionDef> {
    let schema: Option<Json<Value>> = row.try_get("schema").map_err(pg_error)?;
    let unique: Json<Value> = row.try_get("unique_fields").map_err(pg_error)?;
    let indexed: Json<Value> = row.try_get("indexed_fields").map_err(pg_error)?;
    Ok(CollectionDef {
        name: row.try_get("name").map_err(pg_error)?,
        schema: schema.map(|s| s.0),
        unique: strings(unique.0),
        indexed: strings(indexed.0),
        required_feature: row.try_get("required_feature").map_err(pg_error)?,
        created_at: row.try_get("created_at").map_err(pg_error)?,
        updated_at: row.try_get("updated_at").map_err(pg_error)?,
    })
}

pub(super) fn record_from_row(row: &PgRow) -> StoreResult<Record> {
    let id: Uuid = row.try_get("id").map_err(pg_error)?;
    let data: Json<Value> = row.try_get("data").map_err(pg_error)?;
    let created_by: Option<Uuid> = row.try_get("created_by").map_err(pg_error)?;
    Ok(Record {
        id: RecordId(id),
        data: data.0,
        version: row.try_get("version").map_err(pg_error)?,
        created_at: row.try_get("created_at").map_err(pg_error)?,
        updated_at: row.try_get("updated_at").map_err(pg_error)?,
        created_by: created_by.map(crate::ids::UserId),
    })
}

pub(super) const RECORD_COLUMNS: &str = "id, data, version, created_at, updated_at, created_by";
pub(super) const COLLECTION_COLUMNS: &str =
    "name, schema, unique_fields, indexed_fields, required_feature, created_at, updated_at";

/// `{a,b}`: the text[] path of a validated dotted field.
pub(super) fn pg_path(field: &str) -> String {
    format!("{{{}}}", field.replace('.', ","))
}

pub(super) fn path_parts(field: &str) -> Vec<String> {
    field.split('.').map(str::to_owned).collect()
}

/// The sort expressions of an indexed field, mirroring SQLite's
/// `coalesce(json_extract(data, path), '')`: numbers (booleans as 0 and 1)
/// first, numerically; then text in byte order, where a missing field or
/// JSON null is '' and objects and arrays are their JSON text. As a tuple
/// (rank, number, text) with no NULLs, so row comparisons are total and
/// match the index column for column. The text is cut to its first
/// [`SORT_TEXT_CHARS`] characters: a whole long value would break B-tree's
/// entry size limit. The path is spliced: the index and the query must use
/// the same expressions. Field names come from the collection's stored
/// (validated) definition.
pub(super) fn field_sort_exprs(field: &str) -> [String; 3] {
    let p = pg_path(field);
    let v = format!("(data #> '{p}')");
    let t = format!("jsonb_typeof({v})");
    [
        format!("(CASE WHEN {t} IN ('number', 'boolean') THEN 0 ELSE 1 END)"),
        format!(
            "(CASE {t} WHEN 'number' THEN (data #>> '{p}')::float8 \
             WHEN 'boolean' THEN (CASE WHEN {v} = 'true'::jsonb THEN 1 ELSE 0 END)::float8 \
             ELSE 0::float8 END)"
        ),
        format!(
            "(left(CASE {t} WHEN 'string' THEN data #>> '{p}' \
             WHEN 'object' THEN {v}::text WHEN 'array' THEN {v}::text \
             ELSE '' END, {SORT_TEXT_CHARS}) COLLATE \"C\")"
        ),
    ]
}

/// Characters of a text sort key: at most 4 bytes each, well under B-tree's
/// limit of about 2700 bytes per entry. Texts equal this far sort by id.
pub(super) const SORT_TEXT_CHARS: u32 = 512;

/// `records_k_<field>`; names beyond PostgreSQL's 63 bytes keep a hash of the whole.
pub(super) fn index_name(field: &str) -> String {
    let name = format!("records_k_{}", field.replace('.', "__"));
    if name.len() <= 63 {
        return name;
    }
    // FNV-1a: stable across builds and platforms.
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{}_{hash:016x}", &name[..63 - 17])
}

/// PostgreSQL text cannot hold NUL, and stored JSON strings never contain
/// one: a comparison with such an operand is decided by the part before it.
pub(super) enum TextOperand {
    Plain(String),
    /// The part before the first NUL.
    Cut(String),
}

pub(super) fn text_operand(s: &str) -> TextOperand {
    match s.find('\0') {
        None => TextOperand::Plain(s.to_owned()),
        Some(i) => TextOperand::Cut(s[..i].to_owned()),
    }
}

/// A typed comparison: false (never NULL) for a missing field or another type.
pub(super) fn push_compare(
    q: &mut QueryBuilder<'_, Postgres>,
    field: &str,
    cmp: &str,
    op: &Operand,
) {
    match op {
        Operand::Number(n) => {
            q.push("(CASE WHEN jsonb_typeof(data #> ")
                .push_bind(path_parts(field))
                .push("::text[]) = 'number' THEN (data #>> ")
                .push_bind(path_parts(field))
                .push(format_args!("::text[])::float8 {cmp} "))
                .push_bind(*n)
                .push("::float8 ELSE false END)");
        }
        Operand::Text(s) => {
            // With s = p + "\0…" and a stored t without NUL: t = s never;
            // t >= s iff t > p; t <= s iff t <= p.
            let (cmp, operand) = match text_operand(s) {
                TextOperand::Plain(s) => (cmp, s),
                TextOperand::Cut(p) => match cmp {
                    "=" => {
                        q.push("false");
                        return;
                    }
                    ">=" => (">", p),
                    _ => ("<=", p),
                },
            };
            q.push("(CASE WHEN jsonb_typeof(data #> ")
                .push_bind(path_parts(field))
                .push("::text[]) = 'string' THEN (data #>> ")
                .push_bind(path_parts(field))
                .push(format_args!("::text[]) COLLATE \"C\" {cmp} "))
                .push_bind(operand)
                .push("::text ELSE false END)");
        }
    }
}

/// Index DDL is the owner's; runs only when the index is missing, and a
/// concurrent creation of the same index counts as success. `CONCURRENTLY`:
/// on the shared tier the table holds every tenant's records, and a plain
/// build would block all of their writes until it finished. A build that
/// failed midway leaves an invalid index behind; it is dropped and rebuilt.
pub(super) async fn create_index(conn: &mut PgConnection, field: &str) -> StoreResult<()> {
    let [rank, num, text] = field_sort_exprs(field);
    let name = index_name(field);
    let invalid: Option<bool> = sqlx::query_scalar(
        "SELECT NOT i.indisvalid FROM pg_index i
         WHERE i.indexrelid = to_regclass($1)",
    )
    .bind(format!("{DATA_SCHEMA}.{name}"))
    .fetch_optional(&mut *conn)
    .await
    .map_err(pg_error)?;
    if invalid == Some(true) {
        let drop = format!("DROP INDEX CONCURRENTLY IF EXISTS {DATA_SCHEMA}.{name}");
        sqlx::query(&drop)
            .execute(&mut *conn)
            .await
            .map_err(pg_error)?;
    }
    let sql = format!(
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {DATA_SCHEMA}.records \
         (tenant_id, collection, {rank}, {num}, {text}, id)"
    );
    match sqlx::query(&sql).execute(&mut *conn).await {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(e))
            if matches!(e.code().as_deref(), Some("42P07") | Some("23505")) =>
        {
            Ok(())
        }
        Err(e) => Err(pg_error(e)),
    }
}

/// Pushes `AND (<sort key>, id) <cmp> (<cursor>)` for a timestamp column.
/// Cursors carry `time_text`; anything else compares as SQLite would compare
/// it with the stored text (numbers sort before all text).
pub(super) fn push_time_cursor(
    q: &mut QueryBuilder<'_, Postgres>,
    column: &str,
    cmp: &str,
    key: &Value,
    id: Uuid,
) {
    let text = match key {
        Value::Number(_) => {
            q.push(if cmp == ">" {
                " AND true"
            } else {
                " AND false"
            });
            return;
        }
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let time = DateTime::parse_from_rfc3339(&text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
        .filter(|t| time_text(*t) == text);
    if let Some(time) = time {
        q.push(format_args!(" AND ({column}, id) {cmp} ("))
            .push_bind(time)
            .push(", ")
            .push_bind(id)
            .push(")");
        return;
    }
    let expr = format!(
        "(to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') COLLATE \"C\")"
    );
    let (text, id) = match text_operand(&text) {
        TextOperand::Plain(s) => (s, id),
        // Stored text never equals it: compare with the part before NUL, after every id.
        TextOperand::Cut(p) => (p, Uuid::max()),
    };
    q.push(format_args!(" AND ({expr}, id) {cmp} ("))
        .push_bind(text)
        .push("::text, ")
        .push_bind(id)
        .push(")");
}

/// The sort tuple of a field sort: (rank, number, text).
pub(super) type SortTuple = (i32, f64, String);

/// Pushes `AND (<rank, number, text>, id) <cmp> (<cursor>)` for a field sort.
/// `stored` is the cursor record's own tuple, when it still has the key.
pub(super) fn push_field_cursor(
    q: &mut QueryBuilder<'_, Postgres>,
    field: &str,
    cmp: &str,
    key: &Value,
    id: Uuid,
    stored: Option<SortTuple>,
) {
    let [rank, num, text] = field_sort_exprs(field);
    let (k_rank, k_num, k_text, id) = match (key, stored) {
        (_, Some((rank, num, text))) => (rank, num, text, id),
        (Value::Number(n), None) => (0i32, n.as_f64().unwrap_or(0.0), String::new(), id),
        (other, None) => {
            let s = match other {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            match text_operand(&s) {
                TextOperand::Plain(s) => (1, 0.0, s, id),
                TextOperand::Cut(p) => (1, 0.0, p, Uuid::max()),
            }
        }
    };
    q.push(format_args!(" AND ({rank}, {num}, {text}, id) {cmp} ("))
        .push_bind(k_rank)
        .push(", ")
        .push_bind(k_num)
        .push("::float8, left(")
        .push_bind(k_text)
        .push(format_args!("::text, {SORT_TEXT_CHARS}), "))
        .push_bind(id)
        .push(")");
}
