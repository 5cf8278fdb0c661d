//! The handle bound to one tenant on SQLite: the `TenantData` operations,
//! each binding the tenant's id, writes through the database's one writer.

use super::Database;
use super::sql::{
    COLLECTION_COLUMNS, RECORD_COLUMNS, RecordRow, Sql, collection_def, index_name,
    read_collection, sort_sql,
};
use super::write::{
    apply, rebuild_claims, restore_records, stored, stored_collection, stored_unique,
    upsert_collection, writable,
};
use crate::audit::{AuditChain, AuditEntry, AuditFilter, NewAuditEntry};
use crate::clock::Clock;
use crate::ids::{RecordId, TenantId};
use crate::record::{CollectionDef, FilterOp, Record, RecordQuery, SortKey, json_path};
use crate::store::data::{GroupCounts, Restore, TenantData, Usage};
use crate::store::sqlite::audit::{self, ChainAt};
use crate::store::sqlite::direct::direct_error;
use crate::store::{StoreError, StoreResult, time_text, write_plan};
use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use std::sync::Arc;

/// A handle bound to one tenant: every statement binds `self.tenant`.
pub(super) struct SqliteTenantData {
    pub(super) db: Database,
    pub(super) tenant: String,
    pub(super) tenant_id: TenantId,
    pub(super) clock: Arc<dyn Clock>,
}

impl SqliteTenantData {
    pub(super) fn chain(&self) -> ChainAt {
        ChainAt::tenant(AuditChain::Data, self.tenant_id)
    }

    /// Index DDL for the definitions' indexed fields, outside any write
    /// transaction (IF NOT EXISTS makes it idempotent).
    pub(super) async fn ensure_indexes(&self, defs: &[CollectionDef]) -> StoreResult<()> {
        for field in defs.iter().flat_map(|d| &d.indexed) {
            let sql = format!(
                "CREATE INDEX IF NOT EXISTS {} ON records (tenant_id, collection, {}, id)",
                index_name(field),
                sort_sql(&SortKey::Field(field.clone()))
            );
            self.db.execute_batch(&sql).await?;
        }
        Ok(())
    }

    pub(super) async fn set_sealed(&self, sealed: bool) -> StoreResult<()> {
        let t = self.tenant.as_str();
        self.db
            .write(|tx| {
                tx.execute(
                    "INSERT INTO usage (tenant_id, sealed) VALUES (?1, ?2)
                     ON CONFLICT (tenant_id) DO UPDATE SET sealed = excluded.sealed",
                    params![t, sealed],
                )
                .map_err(direct_error)?;
                Ok(())
            })
            .await
    }
}

#[async_trait]
impl TenantData for SqliteTenantData {
    async fn collections_after(&self, after: &str, limit: u32) -> StoreResult<Vec<CollectionDef>> {
        // BINARY collation: the same byte order as PostgreSQL's "C".
        let sql = format!(
            "SELECT {COLLECTION_COLUMNS} FROM collections
             WHERE tenant_id = ?1 AND name > ?2 ORDER BY name LIMIT ?3"
        );
        let rows = self
            .db
            .readers
            .read(|c| {
                let mut statement = c.prepare_cached(&sql).map_err(direct_error)?;
                let rows = statement
                    .query_map(
                        rusqlite::params![self.tenant.as_str(), after, limit],
                        read_collection,
                    )
                    .map_err(direct_error)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(direct_error)
            })
            .await?;
        rows.into_iter().map(collection_def).collect()
    }

    async fn collection(&self, name: &str) -> StoreResult<Option<CollectionDef>> {
        let sql = format!(
            "SELECT {COLLECTION_COLUMNS} FROM collections WHERE tenant_id = ?1 AND name = ?2"
        );
        let row = self
            .db
            .readers
            .read(|c| {
                c.prepare_cached(&sql)
                    .map_err(direct_error)?
                    .query_row([self.tenant.as_str(), name], read_collection)
                    .optional()
                    .map_err(direct_error)
            })
            .await?;
        row.map(collection_def).transpose()
    }

    async fn put_collection(&self, def: &CollectionDef, a: &NewAuditEntry) -> StoreResult<bool> {
        self.ensure_indexes(std::slice::from_ref(def)).await?;
        let t = self.tenant.as_str();
        let chain = self.chain();
        let clock = self.clock.clone();
        self.db
            .write_long(|tx| {
                writable(tx, t)?;
                let existed = stored_collection(tx, t, &def.name)?.is_some();
                upsert_collection(tx, t, def)?;
                // Rebuild the unique claims for the (possibly new) unique fields.
                rebuild_claims(tx, t, def, false)?;
                audit::append_direct_at(tx, &chain, a, clock.now())?;
                Ok(!existed)
            })
            .await
    }

    async fn create_collection_if_absent(
        &self,
        def: &CollectionDef,
        a: &NewAuditEntry,
    ) -> StoreResult<()> {
        let chain = self.chain();
        let clock = self.clock.clone();
        let t = self.tenant.as_str();
        self.db
            .write(|tx| {
                writable(tx, t)?;
                let created = tx
                    .execute(
                        "INSERT INTO collections (tenant_id, name, schema, unique_fields, indexed_fields, required_feature, created_at, updated_at)
                         VALUES (?1, ?2, NULL, '[]', '[]', NULL, ?3, ?4) ON CONFLICT (tenant_id, name) DO NOTHING",
                        params![
                            t,
                            def.name,
                            time_text(def.created_at),
                            time_text(def.updated_at)
                        ],
                    )
                    .map_err(direct_error)?;
                if created > 0 {
                    audit::append_direct_at(tx, &chain, a, clock.now())?;
                }
                Ok(())
            })
            .await
    }

    async fn insert_record(
        &self,
        def: &CollectionDef,
        r: &Record,
        max_storage: Option<u64>,
        a: &NewAuditEntry,
    ) -> StoreResult<()> {
        let data = r.data.to_string();
        let t = self.tenant.as_str();
        let chain = self.chain();
        let clock = self.clock.clone();
        self.db
            .write(|tx| {
                let used = writable(tx, t)?;
                let unique = stored_unique(tx, t, &def.name)?;
                let plan =
                    write_plan::insert(&r.data, data.len() as i64, &unique, used, max_storage)?;
                tx.prepare_cached(
                    "INSERT INTO records (tenant_id, collection, id, data, version, created_at, updated_at, created_by)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(direct_error)?
                .execute(params![
                    t,
                    def.name,
                    r.id.to_string(),
                    data,
                    r.version,
                    time_text(r.created_at),
                    time_text(r.updated_at),
                    r.created_by.map(|u| u.to_string()),
                ])
                .map_err(direct_error)?;
                apply(tx, t, &def.name, r.id, &plan, &chain, (a, clock.now()))
            })
            .await
    }

    async fn record(&self, collection: &str, id: RecordId) -> StoreResult<Option<Record>> {
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM records WHERE tenant_id = ?1 AND collection = ?2 AND id = ?3"
        );
        let row = self
            .db
            .readers
            .read(|conn| {
                conn.prepare_cached(&sql)
                    .map_err(direct_error)?
                    .query_row(
                        params![self.tenant, collection, id.to_string()],
                        RecordRow::read,
                    )
                    .optional()
                    .map_err(direct_error)
            })
            .await?;
        row.map(RecordRow::record).transpose()
    }

    async fn list_records(
        &self,
        def: &CollectionDef,
        query: &RecordQuery,
    ) -> StoreResult<Vec<Record>> {
        let mut q = Sql::default();
        q.push(&format!(
            "SELECT {RECORD_COLUMNS} FROM records WHERE tenant_id = "
        ))
        .bind(self.tenant.clone())
        .push(" AND collection = ")
        .bind(def.name.clone());
        for f in &query.filters {
            let path = json_path(&f.field);
            q.push(" AND ");
            match f.op {
                FilterOp::Eq => q.compare(&path, "=", &f.operands[0]),
                FilterOp::Ne => q.push("NOT ").compare(&path, "=", &f.operands[0]),
                FilterOp::Gte => q.compare(&path, ">=", &f.operands[0]),
                FilterOp::Lte => q.compare(&path, "<=", &f.operands[0]),
                FilterOp::In => {
                    q.push("(0");
                    for op in &f.operands {
                        q.push(" OR ").compare(&path, "=", op);
                    }
                    q.push(")")
                }
            };
        }
        let key = sort_sql(&query.sort);
        let (cmp, dir) = if query.descending {
            ("<", "DESC")
        } else {
            (">", "ASC")
        };
        if let Some(after) = &query.after {
            q.push(&format!(" AND ({key}, id) {cmp} ("))
                .bind_key(&after.key)
                .push(", ")
                .bind(after.id.to_string())
                .push(")");
        }
        q.push(&format!(" ORDER BY {key} {dir}, id {dir} LIMIT "))
            .bind(i64::from(query.limit.max(1)));
        let run = |conn: &Connection| {
            let mut statement = conn.prepare_cached(&q.text).map_err(direct_error)?;
            let rows = statement
                .query_map(rusqlite::params_from_iter(&q.params), RecordRow::read)
                .map_err(direct_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(direct_error)
        };
        // A filter or sort on a field without an index scans the tenant's
        // whole collection: long work. An indexed page is a point read.
        let unindexed = |field: &String| !def.indexed.contains(field);
        let scans = query.filters.iter().any(|f| unindexed(&f.field))
            || matches!(&query.sort, SortKey::Field(f) if unindexed(f));
        let readers = &self.db.readers;
        let rows: Vec<RecordRow> = if scans {
            readers.read_long(run).await?
        } else {
            readers.read(run).await?
        };
        rows.into_iter().map(RecordRow::record).collect()
    }

    async fn update_record(
        &self,
        def: &CollectionDef,
        r: &Record,
        expected: i64,
        max_storage: Option<u64>,
        a: &NewAuditEntry,
    ) -> StoreResult<()> {
        let data = r.data.to_string();
        let t = self.tenant.as_str();
        let chain = self.chain();
        let clock = self.clock.clone();
        self.db
            .write(|tx| {
                let used = writable(tx, t)?;
                let row = stored(tx, t, &def.name, r.id)?;
                let unique = stored_unique(tx, t, &def.name)?;
                let size = data.len() as i64;
                let plan =
                    write_plan::update(&r.data, size, &unique, used, row, expected, max_storage)?;
                tx.prepare_cached(
                    "UPDATE records SET data = ?1, version = ?2, updated_at = ?3
                     WHERE tenant_id = ?4 AND collection = ?5 AND id = ?6",
                )
                .map_err(direct_error)?
                .execute(params![
                    data,
                    r.version,
                    time_text(r.updated_at),
                    t,
                    def.name,
                    r.id.to_string()
                ])
                .map_err(direct_error)?;
                apply(tx, t, &def.name, r.id, &plan, &chain, (a, clock.now()))
            })
            .await
    }

    async fn delete_record(
        &self,
        def: &CollectionDef,
        id: RecordId,
        expected: Option<i64>,
        a: &NewAuditEntry,
    ) -> StoreResult<()> {
        let t = self.tenant.as_str();
        let chain = self.chain();
        let clock = self.clock.clone();
        self.db
            .write(|tx| {
                writable(tx, t)?;
                let plan = write_plan::delete(stored(tx, t, &def.name, id)?, expected)?;
                tx.prepare_cached(
                    "DELETE FROM records WHERE tenant_id = ?1 AND collection = ?2 AND id = ?3",
                )
                .map_err(direct_error)?
                .execute(params![t, def.name, id.to_string()])
                .map_err(direct_error)?;
                apply(tx, t, &def.name, id, &plan, &chain, (a, clock.now()))
            })
            .await
    }

    async fn group_counts(
        &self,
        collection: &str,
        field: &str,
        max_groups: u32,
    ) -> StoreResult<GroupCounts> {
        // The total is summed over every group before the limit.
        let rows: Vec<(Option<String>, i64, i64)> = self.db.readers.read_long(|c| {
            let mut statement = c
                .prepare_cached(
                    "SELECT k, n, sum(n) OVER () FROM (
                         SELECT CASE WHEN json_type(data, ?1) IS NULL THEN NULL
                                     WHEN json_type(data, ?1) IN ('object', 'array') THEN json_extract(data, ?1)
                                     ELSE json_quote(json_extract(data, ?1)) END AS k, count(*) AS n
                         FROM records WHERE tenant_id = ?2 AND collection = ?3 GROUP BY k)
                     ORDER BY n DESC, k LIMIT ?4",
                )
                .map_err(direct_error)?;
            let rows = statement
                .query_map(
                    params![json_path(field), self.tenant, collection, i64::from(max_groups) + 1],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .map_err(direct_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(direct_error)
        }).await?;
        Ok(crate::store::data::group_counts_from(rows, max_groups))
    }

    async fn usage(&self) -> StoreResult<Usage> {
        let row: Option<(i64, i64)> = self
            .db
            .readers
            .read(|c| {
                c.prepare_cached("SELECT records, storage_bytes FROM usage WHERE tenant_id = ?1")
                    .map_err(direct_error)?
                    .query_row([&self.tenant], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
                    .map_err(direct_error)
            })
            .await?;
        let (records, storage_bytes) = row.unwrap_or((0, 0));
        Ok(Usage {
            records: records.max(0) as u64,
            storage_bytes: storage_bytes.max(0) as u64,
        })
    }

    async fn list_audit(
        &self,
        filter: &AuditFilter,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<(i64, AuditEntry)>> {
        let chain = self.chain();
        self.db
            .readers
            .read(|c| audit::list_direct(c, &chain, filter, after_seq, limit))
            .await
    }

    async fn audit_head(&self) -> StoreResult<Option<(i64, String)>> {
        let chain = self.chain();
        self.db
            .readers
            .read(|c| audit::head_direct(c, &chain))
            .await
    }

    async fn last_record_id(&self, collection: &str) -> StoreResult<Option<RecordId>> {
        let id: Option<String> = self
            .db
            .readers
            .read(|c| {
                c.prepare_cached(
                    "SELECT id FROM records WHERE tenant_id = ?1 AND collection = ?2
                     ORDER BY id DESC LIMIT 1",
                )
                .and_then(|mut st| {
                    st.query_row(params![self.tenant, collection], |r| r.get(0))
                        .optional()
                })
                .map_err(direct_error)
            })
            .await?;
        id.map(|id| {
            id.parse()
                .map(RecordId)
                .map_err(|e| StoreError::Internal(format!("stored record id {id:?}: {e}")))
        })
        .transpose()
    }

    async fn scan_records(
        &self,
        after: Option<&(String, RecordId)>,
        limit: u32,
    ) -> StoreResult<Vec<(String, Record)>> {
        let (collection, id) = after.map_or((String::new(), String::new()), |(c, id)| {
            (c.clone(), id.to_string())
        });
        let sql = format!(
            "SELECT collection, {RECORD_COLUMNS} FROM records
             WHERE tenant_id = ?1 AND (collection, id) > (?2, ?3)
             ORDER BY collection, id LIMIT ?4"
        );
        let rows: Vec<(String, RecordRow)> = self
            .db
            .readers
            .read_long(|c| {
                let mut statement = c.prepare_cached(&sql).map_err(direct_error)?;
                let rows = statement
                    .query_map(
                        params![self.tenant, collection, id, i64::from(limit.max(1))],
                        |r| {
                            let (c, id, data, version, created_at, updated_at, created_by) =
                                r.try_into()?;
                            Ok((
                                c,
                                RecordRow(id, data, version, created_at, updated_at, created_by),
                            ))
                        },
                    )
                    .map_err(direct_error)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(direct_error)
            })
            .await?;
        rows.into_iter()
            .map(|(c, row)| Ok((c, row.record()?)))
            .collect()
    }

    async fn restore(&self, restore: &Restore) -> StoreResult<()> {
        if restore.is_empty() {
            return Ok(());
        }
        self.ensure_indexes(&restore.collections).await?;
        let t = self.tenant.as_str();
        let chain = self.chain();
        let clock = self.clock.clone();
        self.db
            .write_long(|tx| {
                tx.execute(
                    "INSERT INTO usage (tenant_id) VALUES (?1) ON CONFLICT (tenant_id) DO NOTHING",
                    [t],
                )
                .map_err(direct_error)?;
                for def in &restore.collections {
                    let before = stored_collection(tx, t, &def.name)?;
                    upsert_collection(tx, t, def)?;
                    if before.as_ref() != Some(&def.unique) {
                        rebuild_claims(tx, t, def, true)?;
                    }
                }
                restore_records(tx, t, restore)?;
                for (seq, entry) in &restore.audit {
                    audit::insert_direct(tx, &chain, *seq, entry)?;
                }
                for (entry, at) in &restore.relink {
                    audit::append_direct_at(tx, &chain, entry, *at)?;
                }
                if let Some(entry) = &restore.append {
                    audit::append_direct_at(tx, &chain, entry, clock.now())?;
                }
                Ok(())
            })
            .await
    }

    async fn seal(&self) -> StoreResult<()> {
        self.set_sealed(true).await
    }

    async fn unseal(&self) -> StoreResult<()> {
        self.set_sealed(false).await
    }

    async fn clear(&self) -> StoreResult<()> {
        let t = self.tenant.as_str();
        self.db
            .write_long(|tx| {
                for table in ["record_uniques", "records", "collections"] {
                    tx.execute(&format!("DELETE FROM {table} WHERE tenant_id = ?1"), [t])
                        .map_err(direct_error)?;
                }
                tx.execute(
                    "UPDATE usage SET records = 0, storage_bytes = 0 WHERE tenant_id = ?1",
                    [t],
                )
                .map_err(direct_error)?;
                Ok(())
            })
            .await
    }
}
