//! The handle bound to one tenant on PostgreSQL: the `TenantData`
//! operations, each in the tenant's `tenant_tx`.

use super::record_write::RowChange;
use super::registry::PoolEntry;
use super::sql::{
    COLLECTION_COLUMNS, RECORD_COLUMNS, collection_from_row, field_sort_exprs, path_parts,
    push_compare, push_field_cursor, push_time_cursor, record_from_row,
};
use crate::audit::{AuditEntry, AuditFilter, NewAuditEntry};
use crate::clock::Clock;
use crate::ids::{RecordId, TenantId};
use crate::record::{CollectionDef, FilterOp, Record, RecordQuery, SortKey};
use crate::store::data::{GroupCounts, Restore, TenantData, Usage, group_counts_from};
use crate::store::postgres::audit::{self, ChainAt};
use crate::store::postgres::{DATA_SCHEMA, pg_error};
use crate::store::{StoreResult, write_plan};
use async_trait::async_trait;
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool, Postgres, QueryBuilder, Row};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use uuid::Uuid;

pub(super) enum Backend {
    /// The main database: runtime pool for rows, owner pool for index DDL.
    Shared { pool: PgPool, admin: PgPool },
    /// The tenant's database: its registry entry, and how to reach it as owner.
    Dedicated {
        entry: Arc<PoolEntry>,
        admin: Box<sqlx::postgres::PgConnectOptions>,
    },
}

/// A handle bound to one tenant: every statement runs in its `tenant_tx`
/// and binds its id.
pub(super) struct PgTenantData {
    pub(super) backend: Backend,
    pub(super) tenant: TenantId,
    /// Records this handle has restored (an import, a move's copy).
    pub(super) restored: AtomicU64,
    pub(super) clock: Arc<dyn Clock>,
}

/// Lifts the runtime role's `statement_timeout` for this transaction: a
/// background job deleting a large tenant's rows may take longer than any
/// request should.
pub(crate) async fn without_statement_timeout(tx: &mut PgConnection) -> StoreResult<()> {
    sqlx::query("SET LOCAL statement_timeout = 0")
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
    Ok(())
}

/// 0 below a thousand, then the power of ten: a bulk load refreshes the
/// planner's statistics at 1k, 10k, 100k… records.
pub(super) fn decade(n: u64) -> u32 {
    if n < 1000 { 0 } else { n.ilog10() }
}

impl PgTenantData {
    /// Refreshes the planner's statistics of the tables a bulk load fills.
    /// Without them (a new database, or autovacuum not yet round) the
    /// planner took a 1000-key lookup for a scan of the tenant's whole
    /// collection, and a 100k-record import slowed to a crawl. Statistics
    /// are an optimisation: a failure is logged, not raised.
    pub(super) async fn analyze(&self) {
        let sql = format!("ANALYZE {DATA_SCHEMA}.records, {DATA_SCHEMA}.record_uniques");
        let done = match &self.backend {
            Backend::Shared { admin, .. } => sqlx::query(&sql).execute(admin).await.map(|_| ()),
            Backend::Dedicated { admin, .. } => match admin.connect().await {
                Ok(mut conn) => {
                    let done = sqlx::query(&sql).execute(&mut conn).await.map(|_| ());
                    let _ = conn.close().await;
                    done
                }
                Err(e) => Err(e),
            },
        };
        if let Err(e) = done {
            tracing::warn!(error = %e, "refreshing statistics after a bulk load failed");
        }
    }
}

#[async_trait]
impl TenantData for PgTenantData {
    async fn collections_after(&self, after: &str, limit: u32) -> StoreResult<Vec<CollectionDef>> {
        if after.contains('\0') {
            return Ok(Vec::new());
        }
        let mut tx = self.tx().await?;
        let rows = sqlx::query(&format!(
            "SELECT {COLLECTION_COLUMNS} FROM {DATA_SCHEMA}.collections
             WHERE tenant_id = $1 AND name COLLATE \"C\" > $2
             ORDER BY name COLLATE \"C\" LIMIT $3"
        ))
        .bind(self.tenant.0)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        rows.iter().map(collection_from_row).collect()
    }

    async fn collection(&self, name: &str) -> StoreResult<Option<CollectionDef>> {
        if name.contains('\0') {
            return Ok(None);
        }
        let mut tx = self.tx().await?;
        let row = sqlx::query(&format!(
            "SELECT {COLLECTION_COLUMNS} FROM {DATA_SCHEMA}.collections
             WHERE tenant_id = $1 AND name = $2"
        ))
        .bind(self.tenant.0)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        row.as_ref().map(collection_from_row).transpose()
    }

    async fn put_collection(&self, def: &CollectionDef, a: &NewAuditEntry) -> StoreResult<bool> {
        // Index DDL first, on the owner role (IF NOT EXISTS makes it idempotent).
        self.ensure_indexes(def).await?;
        let mut tx = self.tx().await?;
        self.lock_usage(&mut tx).await?;
        let existed: Option<i32> = sqlx::query_scalar(&format!(
            "SELECT 1 FROM {DATA_SCHEMA}.collections WHERE tenant_id = $1 AND name = $2"
        ))
        .bind(self.tenant.0)
        .bind(&def.name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg_error)?;
        // Rebuild the unique claims for the (possibly new) unique fields.
        self.rebuild_claims(&mut tx, def, false).await?;
        self.upsert_collection(&mut tx, def).await?;
        audit::append_at(&mut tx, &ChainAt::data(self.tenant), a, self.clock.now()).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(existed.is_none())
    }

    async fn create_collection_if_absent(
        &self,
        def: &CollectionDef,
        a: &NewAuditEntry,
    ) -> StoreResult<()> {
        let mut tx = self.tx().await?;
        self.lock_usage(&mut tx).await?;
        let done = sqlx::query(&format!(
            "INSERT INTO {DATA_SCHEMA}.collections (tenant_id, name, schema, unique_fields, indexed_fields,
                required_feature, created_at, updated_at)
             VALUES ($1, $2, NULL, '[]', '[]', NULL, $3, $4) ON CONFLICT (tenant_id, name) DO NOTHING"
        ))
        .bind(self.tenant.0)
        .bind(&def.name)
        .bind(def.created_at)
        .bind(def.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        if done.rows_affected() > 0 {
            audit::append_at(&mut tx, &ChainAt::data(self.tenant), a, self.clock.now()).await?;
        }
        tx.commit().await.map_err(pg_error)
    }

    async fn insert_record(
        &self,
        def: &CollectionDef,
        r: &Record,
        max_storage: Option<u64>,
        a: &NewAuditEntry,
    ) -> StoreResult<()> {
        // The quota's unit: the bytes of the data as the API serialised it.
        let size = write_plan::record_size(&r.data);
        let mut tx = self.write_tx().await?;
        let view = self.write_view(&mut tx, &def.name, r.id).await?;
        let plan = write_plan::insert(&r.data, size, &view.unique, view.used, max_storage)?;
        let change = RowChange::Insert(r, size);
        self.finish_write(tx, &def.name, change, view, &plan, a)
            .await
    }

    async fn record(&self, collection: &str, id: RecordId) -> StoreResult<Option<Record>> {
        if collection.contains('\0') {
            return Ok(None);
        }
        let mut tx = self.tx().await?;
        let row = sqlx::query(&format!(
            "SELECT {RECORD_COLUMNS} FROM {DATA_SCHEMA}.records
             WHERE tenant_id = $1 AND collection = $2 AND id = $3"
        ))
        .bind(self.tenant.0)
        .bind(collection)
        .bind(id.0)
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        row.as_ref().map(record_from_row).transpose()
    }

    async fn list_records(
        &self,
        def: &CollectionDef,
        query: &RecordQuery,
    ) -> StoreResult<Vec<Record>> {
        let mut q = QueryBuilder::<Postgres>::new(format!(
            "SELECT {RECORD_COLUMNS} FROM {DATA_SCHEMA}.records WHERE tenant_id = "
        ));
        q.push_bind(self.tenant.0)
            .push(" AND collection = ")
            .push_bind(def.name.clone());
        for f in &query.filters {
            let Some(first) = f.operands.first() else {
                continue;
            };
            q.push(" AND ");
            match f.op {
                FilterOp::Eq => push_compare(&mut q, &f.field, "=", first),
                FilterOp::Ne => {
                    q.push("NOT ");
                    push_compare(&mut q, &f.field, "=", first);
                }
                FilterOp::Gte => push_compare(&mut q, &f.field, ">=", first),
                FilterOp::Lte => push_compare(&mut q, &f.field, "<=", first),
                FilterOp::In => {
                    q.push("(false");
                    for op in &f.operands {
                        q.push(" OR ");
                        push_compare(&mut q, &f.field, "=", op);
                    }
                    q.push(")");
                }
            }
        }
        let (cmp, dir) = if query.descending {
            ("<", "DESC")
        } else {
            (">", "ASC")
        };
        let order: Vec<String> = match &query.sort {
            SortKey::CreatedAt => vec!["created_at".into()],
            SortKey::UpdatedAt => vec!["updated_at".into()],
            SortKey::Field(f) => field_sort_exprs(f).into(),
        };
        let mut tx = self.tx().await?;
        // Objects and arrays sort by their JSON text, which jsonb spells
        // unlike serde_json (the cursor's spelling): when the cursor's
        // record still has the cursor's key, page from its stored tuple.
        let stored = match (&query.sort, &query.after) {
            (SortKey::Field(f), Some(after))
                if after
                    .key
                    .as_str()
                    .is_some_and(|k| k.starts_with(['{', '['])) =>
            {
                self.stored_sort_tuple(&mut tx, def, f, &query.sort, after)
                    .await?
            }
            _ => None,
        };
        if let Some(after) = &query.after {
            match &query.sort {
                SortKey::CreatedAt => {
                    push_time_cursor(&mut q, "created_at", cmp, &after.key, after.id.0)
                }
                SortKey::UpdatedAt => {
                    push_time_cursor(&mut q, "updated_at", cmp, &after.key, after.id.0)
                }
                SortKey::Field(f) => {
                    push_field_cursor(&mut q, f, cmp, &after.key, after.id.0, stored)
                }
            }
        }
        q.push(" ORDER BY ");
        for expr in &order {
            q.push(format_args!("{expr} {dir}, "));
        }
        q.push(format_args!("id {dir} LIMIT "));
        q.push_bind(i64::from(query.limit.max(1)));
        let rows = q.build().fetch_all(&mut *tx).await.map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        rows.iter().map(record_from_row).collect()
    }

    async fn update_record(
        &self,
        def: &CollectionDef,
        r: &Record,
        expected: i64,
        max_storage: Option<u64>,
        a: &NewAuditEntry,
    ) -> StoreResult<()> {
        let size = write_plan::record_size(&r.data);
        let mut tx = self.write_tx().await?;
        let view = self.write_view(&mut tx, &def.name, r.id).await?;
        let (unique, used, row) = (&view.unique, view.used, view.row);
        let plan = write_plan::update(&r.data, size, unique, used, row, expected, max_storage)?;
        let change = RowChange::Update(r, size);
        self.finish_write(tx, &def.name, change, view, &plan, a)
            .await
    }

    async fn delete_record(
        &self,
        def: &CollectionDef,
        id: RecordId,
        expected: Option<i64>,
        a: &NewAuditEntry,
    ) -> StoreResult<()> {
        let mut tx = self.write_tx().await?;
        let view = self.write_view(&mut tx, &def.name, id).await?;
        let plan = write_plan::delete(view.row, expected)?;
        let change = RowChange::Delete(id);
        self.finish_write(tx, &def.name, change, view, &plan, a)
            .await
    }

    async fn group_counts(
        &self,
        collection: &str,
        field: &str,
        max_groups: u32,
    ) -> StoreResult<GroupCounts> {
        if collection.contains('\0') {
            return Ok(GroupCounts::default());
        }
        // Keys as SQLite's json_extract gives them: a missing field is NULL,
        // booleans are 0 and 1, everything else its JSON text (numbers keep
        // their stored spelling, so 1 and 1.0 are two groups there too).
        // The total is summed over every group before the limit.
        let mut tx = self.tx().await?;
        let rows: Vec<(Option<String>, i64, i64)> = sqlx::query_as(&format!(
            "SELECT k, n, (sum(n) OVER ())::int8 FROM (
                 SELECT CASE jsonb_typeof(data #> $1::text[])
                            WHEN 'boolean' THEN CASE WHEN data #> $1::text[] = 'true'::jsonb THEN '1' ELSE '0' END
                            ELSE (data #> $1::text[])::text END AS k, count(*) AS n
                 FROM {DATA_SCHEMA}.records WHERE tenant_id = $2 AND collection = $3 GROUP BY k) g
             ORDER BY n DESC, k LIMIT $4"
        ))
        .bind(path_parts(field))
        .bind(self.tenant.0)
        .bind(collection)
        .bind(i64::from(max_groups) + 1)
        .fetch_all(&mut *tx)
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(group_counts_from(rows, max_groups))
    }

    async fn usage(&self) -> StoreResult<Usage> {
        let mut tx = self.tx().await?;
        let row: Option<(i64, i64)> = sqlx::query_as(&format!(
            "SELECT records, storage_bytes FROM {DATA_SCHEMA}.usage WHERE tenant_id = $1"
        ))
        .bind(self.tenant.0)
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
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
        let mut tx = self.tx().await?;
        let at = ChainAt::data(self.tenant);
        let entries = audit::list(&mut tx, &at, filter, after_seq, limit).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(entries)
    }
    async fn audit_head(&self) -> StoreResult<Option<(i64, String)>> {
        let mut tx = self.tx().await?;
        let head = audit::head(&mut tx, &ChainAt::data(self.tenant)).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(head)
    }

    async fn last_record_id(&self, collection: &str) -> StoreResult<Option<RecordId>> {
        let mut tx = self.tx().await?;
        let id: Option<Uuid> = sqlx::query_scalar(&format!(
            "SELECT id FROM {DATA_SCHEMA}.records WHERE tenant_id = $1 AND collection = $2
             ORDER BY id DESC LIMIT 1"
        ))
        .bind(self.tenant.0)
        .bind(collection)
        .fetch_optional(&mut *tx)
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(id.map(RecordId))
    }

    async fn scan_records(
        &self,
        after: Option<&(String, RecordId)>,
        limit: u32,
    ) -> StoreResult<Vec<(String, Record)>> {
        // The primary key's order (default collation): an index scan, page by page.
        let (collection, id) =
            after.map_or((String::new(), Uuid::nil()), |(c, id)| (c.clone(), id.0));
        let mut tx = self.tx().await?;
        let rows = sqlx::query(&format!(
            "SELECT collection, {RECORD_COLUMNS} FROM {DATA_SCHEMA}.records
             WHERE tenant_id = $1 AND (collection, id) > ($2, $3)
             ORDER BY collection, id LIMIT $4"
        ))
        .bind(self.tenant.0)
        .bind(collection)
        .bind(id)
        .bind(i64::from(limit.max(1)))
        .fetch_all(&mut *tx)
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("collection").map_err(pg_error)?,
                    record_from_row(r)?,
                ))
            })
            .collect()
    }

    async fn restore(&self, restore: &Restore) -> StoreResult<()> {
        if restore.is_empty() {
            return Ok(());
        }
        for def in &restore.collections {
            self.ensure_indexes(def).await?;
        }
        let mut tx = self.tx().await?;
        self.lock_usage_for_restore(&mut tx).await?;
        for def in &restore.collections {
            let before = self.stored_unique_opt(&mut tx, &def.name).await?;
            self.upsert_collection(&mut tx, def).await?;
            if before.as_ref() != Some(&def.unique) {
                self.rebuild_claims(&mut tx, def, true).await?;
            }
        }
        for (collection, id) in &restore.removed {
            if let Some((_, size)) = self.stored(&mut tx, collection, *id).await? {
                sqlx::query(&format!(
                    "DELETE FROM {DATA_SCHEMA}.records WHERE tenant_id = $1 AND collection = $2 AND id = $3"
                ))
                .bind(self.tenant.0)
                .bind(collection)
                .bind(id.0)
                .execute(&mut *tx)
                .await
                .map_err(pg_error)?;
                self.release_uniques(&mut tx, collection, *id).await?;
                self.add_usage(&mut tx, -1, -size).await?;
            }
        }
        self.restore_records(&mut tx, &restore.records).await?;
        let chain = ChainAt::data(self.tenant);
        audit::insert_all(&mut tx, &chain, &restore.audit).await?;
        // Borrowed pairs, gathered first: a closure's borrow would keep the
        // future from being Send.
        let relink: Vec<_> = restore.relink.iter().map(|(e, t)| (e, *t)).collect();
        audit::append_all_at(&mut tx, &chain, relink).await?;
        if let Some(entry) = &restore.append {
            audit::append_at(&mut tx, &chain, entry, self.clock.now()).await?;
        }
        tx.commit().await.map_err(pg_error)?;
        let loaded = restore.records.len() as u64;
        let before = self.restored.fetch_add(loaded, Ordering::Relaxed);
        if decade(before + loaded) > decade(before) {
            self.analyze().await;
        }
        Ok(())
    }

    async fn seal(&self) -> StoreResult<()> {
        self.set_sealed(true).await
    }

    async fn unseal(&self) -> StoreResult<()> {
        self.set_sealed(false).await
    }

    async fn clear(&self) -> StoreResult<()> {
        let mut tx = self.tx().await?;
        without_statement_timeout(&mut tx).await?;
        self.lock_usage_for_restore(&mut tx).await?;
        for table in ["record_uniques", "records", "collections"] {
            sqlx::query(&format!(
                "DELETE FROM {DATA_SCHEMA}.{table} WHERE tenant_id = $1"
            ))
            .bind(self.tenant.0)
            .execute(&mut *tx)
            .await
            .map_err(pg_error)?;
        }
        sqlx::query(&format!(
            "UPDATE {DATA_SCHEMA}.usage SET records = 0, storage_bytes = 0 WHERE tenant_id = $1"
        ))
        .bind(self.tenant.0)
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)
    }
}
