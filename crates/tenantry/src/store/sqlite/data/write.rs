//! The steps of a write on SQLite: the tenant's usage row checked and
//! adjusted, unique claims, collection definitions and restores, each on
//! the writer's open transaction.

use super::sql::{RECORD_COLUMNS, RecordRow};
use crate::audit::NewAuditEntry;
use crate::ids::RecordId;
use crate::record::CollectionDef;
use crate::store::data::Restore;
use crate::store::sqlite::audit::{self, ChainAt};
use crate::store::sqlite::direct::direct_error;
use crate::store::write_plan::{Planned, unique_claims};
use crate::store::{StoreError, StoreResult, time_text};
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

/// The writes' steps, each a statement or two on the open write
/// transaction (`tx`) of one tenant (`t`).
///
/// Every request write starts here: the tenant's usage row says its data
/// lives in this database (`Absent` without it: moved away, purged, or
/// never written before the mark existed) and takes writes (`Sealed`
/// while a job holds the copy). Returns the stored bytes, for the quota.
pub(super) fn writable(tx: &Connection, t: &str) -> StoreResult<u64> {
    let row: Option<(i64, bool)> = tx
        .prepare_cached("SELECT storage_bytes, sealed FROM usage WHERE tenant_id = ?1")
        .map_err(direct_error)?
        .query_row([t], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(direct_error)?;
    match row {
        None => Err(StoreError::Absent),
        Some((_, true)) => Err(StoreError::Sealed),
        Some((bytes, false)) => Ok(bytes.max(0) as u64),
    }
}

pub(super) fn add_usage(tx: &Connection, t: &str, records: i64, bytes: i64) -> StoreResult<()> {
    tx.prepare_cached(
        "INSERT INTO usage (tenant_id, records, storage_bytes) VALUES (?1, ?2, ?3)
         ON CONFLICT (tenant_id) DO UPDATE
         SET records = records + excluded.records, storage_bytes = storage_bytes + excluded.storage_bytes",
    )
    .map_err(direct_error)?
    .execute(params![t, records, bytes])
    .map_err(direct_error)?;
    Ok(())
}

/// The unique fields as stored now. Writes claim these rather than those
/// of the caller's definition, which may come from a cache that has not
/// yet seen another instance add a unique field.
pub(super) fn stored_unique(
    tx: &Connection,
    t: &str,
    collection: &str,
) -> StoreResult<Vec<String>> {
    let text: Option<String> = tx
        .prepare_cached("SELECT unique_fields FROM collections WHERE tenant_id = ?1 AND name = ?2")
        .map_err(direct_error)?
        .query_row([t, collection], |r| r.get(0))
        .optional()
        .map_err(direct_error)?;
    Ok(text
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default())
}

/// Executes a planned write's steps after its row, on the same
/// transaction: claims released and taken, usage moved, the audit entry
/// (stamped with the time given).
pub(super) fn apply(
    tx: &Connection,
    t: &str,
    collection: &str,
    id: RecordId,
    plan: &Planned,
    chain: &ChainAt,
    (entry, at): (&NewAuditEntry, DateTime<Utc>),
) -> StoreResult<()> {
    if plan.release {
        release_uniques(tx, t, collection, id)?;
    }
    claim(tx, t, collection, &plan.claims, id, false)?;
    add_usage(tx, t, plan.records, plan.bytes)?;
    audit::append_direct_at(tx, chain, entry, at)?;
    Ok(())
}

/// Takes a record's unique claims (`write_plan::unique_claims`), or
/// (`take_over`) takes a claimed value over: a restore copies rows read at
/// different times, and a value may still be claimed by a record whose
/// newer version arrives later.
pub(super) fn claim(
    tx: &Connection,
    t: &str,
    collection: &str,
    claims: &[(String, String)],
    id: RecordId,
    take_over: bool,
) -> StoreResult<()> {
    let sql = if take_over {
        "INSERT INTO record_uniques (tenant_id, collection, field, value, record_id)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (tenant_id, collection, field, value) DO UPDATE SET record_id = excluded.record_id"
    } else {
        "INSERT INTO record_uniques (tenant_id, collection, field, value, record_id)
         VALUES (?1, ?2, ?3, ?4, ?5)"
    };
    for (field, key) in claims {
        tx.prepare_cached(sql)
            .map_err(direct_error)?
            .execute(params![t, collection, field, key, id.to_string()])
            .map_err(|e| match direct_error(e) {
                StoreError::Conflict(_) => StoreError::Conflict(field.clone()),
                other => other,
            })?;
    }
    Ok(())
}

pub(super) fn release_uniques(
    tx: &Connection,
    t: &str,
    collection: &str,
    id: RecordId,
) -> StoreResult<()> {
    tx.prepare_cached(
        "DELETE FROM record_uniques WHERE tenant_id = ?1 AND collection = ?2 AND record_id = ?3",
    )
    .map_err(direct_error)?
    .execute(params![t, collection, id.to_string()])
    .map_err(direct_error)?;
    Ok(())
}

/// A collection's unique fields as stored, if it is defined.
pub(super) fn stored_collection(
    tx: &Connection,
    t: &str,
    name: &str,
) -> StoreResult<Option<Vec<String>>> {
    let text: Option<String> = tx
        .prepare_cached("SELECT unique_fields FROM collections WHERE tenant_id = ?1 AND name = ?2")
        .map_err(direct_error)?
        .query_row([t, name], |r| r.get(0))
        .optional()
        .map_err(direct_error)?;
    Ok(text.map(|t| serde_json::from_str(&t).unwrap_or_default()))
}

/// Creates or replaces a definition row (`created_at` of an existing one stays).
pub(super) fn upsert_collection(tx: &Connection, t: &str, def: &CollectionDef) -> StoreResult<()> {
    tx.prepare_cached(
        "INSERT INTO collections (tenant_id, name, schema, unique_fields, indexed_fields, required_feature, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (tenant_id, name) DO UPDATE SET schema = excluded.schema, unique_fields = excluded.unique_fields,
            indexed_fields = excluded.indexed_fields, required_feature = excluded.required_feature,
            updated_at = excluded.updated_at",
    )
    .map_err(direct_error)?
    .execute(params![
        t,
        def.name,
        def.schema.as_ref().map(Value::to_string),
        serde_json::to_string(&def.unique).unwrap_or_default(),
        serde_json::to_string(&def.indexed).unwrap_or_default(),
        def.required_feature,
        time_text(def.created_at),
        time_text(def.updated_at),
    ])
    .map_err(direct_error)?;
    Ok(())
}

/// Claims every record's values of the collection's unique fields anew
/// (`take_over`: as a restore claims, see `claim`). Reads the collection's
/// records in pages: a large collection is never held in memory whole.
pub(super) fn rebuild_claims(
    tx: &Connection,
    t: &str,
    def: &CollectionDef,
    take_over: bool,
) -> StoreResult<()> {
    tx.execute(
        "DELETE FROM record_uniques WHERE tenant_id = ?1 AND collection = ?2",
        [t, def.name.as_str()],
    )
    .map_err(direct_error)?;
    if def.unique.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "SELECT {RECORD_COLUMNS} FROM records WHERE tenant_id = ?1 AND collection = ?2 AND id > ?3
         ORDER BY id LIMIT 1000"
    );
    let mut after = String::new();
    loop {
        let rows = tx
            .prepare_cached(&sql)
            .map_err(direct_error)?
            .query_map(params![t, def.name, after], RecordRow::read)
            .map_err(direct_error)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(direct_error)?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = last.0.clone();
        for row in rows {
            let record = row.record()?;
            let claims = unique_claims(&record.data, &def.unique);
            claim(tx, t, &def.name, &claims, record.id, take_over)?;
        }
    }
}

/// The stored version and data length (bytes, as the quota counts them:
/// `length` of text counts characters) of a record.
pub(super) fn stored(
    tx: &Connection,
    t: &str,
    collection: &str,
    id: RecordId,
) -> StoreResult<Option<(i64, i64)>> {
    tx.prepare_cached(
        "SELECT version, length(CAST(data AS BLOB)) FROM records WHERE tenant_id = ?1 AND collection = ?2 AND id = ?3",
    )
    .map_err(direct_error)?
    .query_row(params![t, collection, id.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))
    .optional()
    .map_err(direct_error)
}

/// `Restore`'s records and removals, on the open transaction.
pub(super) fn restore_records(tx: &Connection, t: &str, restore: &Restore) -> StoreResult<()> {
    // Claims follow the unique fields as stored now (the restore's own
    // definitions were written first).
    let mut unique_fields: std::collections::HashMap<&str, Vec<String>> = Default::default();
    for (collection, id) in &restore.removed {
        if let Some((_, len)) = stored(tx, t, collection, *id)? {
            tx.prepare_cached(
                "DELETE FROM records WHERE tenant_id = ?1 AND collection = ?2 AND id = ?3",
            )
            .map_err(direct_error)?
            .execute(params![t, collection, id.to_string()])
            .map_err(direct_error)?;
            release_uniques(tx, t, collection, *id)?;
            add_usage(tx, t, -1, -len)?;
        }
    }
    for (collection, r) in &restore.records {
        let data = r.data.to_string();
        let old = stored(tx, t, collection, r.id)?;
        tx.prepare_cached(
            "INSERT INTO records (tenant_id, collection, id, data, version, created_at, updated_at, created_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (tenant_id, collection, id) DO UPDATE SET data = excluded.data,
                version = excluded.version, created_at = excluded.created_at,
                updated_at = excluded.updated_at, created_by = excluded.created_by",
        )
        .map_err(direct_error)?
        .execute(params![
            t,
            collection,
            r.id.to_string(),
            data,
            r.version,
            time_text(r.created_at),
            time_text(r.updated_at),
            r.created_by.map(|u| u.to_string()),
        ])
        .map_err(direct_error)?;
        release_uniques(tx, t, collection, r.id)?;
        if !unique_fields.contains_key(collection.as_str()) {
            let fields = stored_collection(tx, t, collection)?.unwrap_or_default();
            unique_fields.insert(collection, fields);
        }
        let fields = unique_fields
            .get(collection.as_str())
            .map_or(&[][..], Vec::as_slice);
        claim(
            tx,
            t,
            collection,
            &unique_claims(&r.data, fields),
            r.id,
            true,
        )?;
        let (added, old_len) = old.map_or((1, 0), |(_, len)| (0, len));
        add_usage(tx, t, added, data.len() as i64 - old_len)?;
    }
    Ok(())
}
