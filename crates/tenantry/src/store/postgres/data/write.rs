//! The steps of a write on PostgreSQL: the tenant's usage row locked and
//! adjusted, unique claims, restores and index builds, each inside the
//! caller's transaction.

use super::sql::{
    RECORD_COLUMNS, SortTuple, create_index, field_sort_exprs, index_name, record_from_row,
};
use super::tenant::{Backend, PgTenantData};
use crate::ids::RecordId;
use crate::record::{CollectionDef, Record, SortKey};
use crate::store::postgres::{DATA_SCHEMA, pg_error, tenant_tx};
use crate::store::write_plan::unique_claims;
use crate::store::{StoreError, StoreResult};
use sqlx::types::Json;
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool, Postgres, Row};
use std::collections::{BTreeMap, HashMap};
use uuid::Uuid;

impl PgTenantData {
    pub(super) fn pool(&self) -> &PgPool {
        match &self.backend {
            Backend::Shared { pool, .. } => pool,
            Backend::Dedicated { entry, .. } => &entry.pool,
        }
    }

    pub(super) async fn tx(&self) -> StoreResult<sqlx::Transaction<'static, Postgres>> {
        tenant_tx(self.pool(), self.tenant).await
    }

    /// Locks the tenant's usage row and returns its storage: every write
    /// takes it first, so a tenant's writes are serialised as on SQLite —
    /// quota checks, version checks and unique claims see each other, and
    /// locks are always taken in the same order. The row says the tenant's
    /// data lives here (`Absent` without it: moved away, purged, or never
    /// written before the mark existed) and takes writes (`Sealed` while a
    /// job holds the copy); a seal waits for the writes holding the lock.
    pub(super) async fn lock_usage(&self, conn: &mut PgConnection) -> StoreResult<u64> {
        let row: Option<(i64, bool)> = sqlx::query_as(&format!(
            "SELECT storage_bytes, sealed FROM {DATA_SCHEMA}.usage WHERE tenant_id = $1 FOR UPDATE"
        ))
        .bind(self.tenant.0)
        .fetch_optional(&mut *conn)
        .await
        .map_err(pg_error)?;
        match row {
            None => Err(StoreError::Absent),
            Some((_, true)) => Err(StoreError::Sealed),
            Some((n, false)) => Ok(n.max(0) as u64),
        }
    }

    /// The usage row locked for a restore, created if missing (restores
    /// ignore the seal).
    pub(super) async fn lock_usage_for_restore(&self, conn: &mut PgConnection) -> StoreResult<()> {
        sqlx::query(&format!(
            "INSERT INTO {DATA_SCHEMA}.usage AS u (tenant_id) VALUES ($1)
             ON CONFLICT (tenant_id) DO UPDATE SET records = u.records"
        ))
        .bind(self.tenant.0)
        .execute(&mut *conn)
        .await
        .map_err(pg_error)?;
        Ok(())
    }

    /// Creates or replaces a definition row (`created_at` of an existing one stays).
    pub(super) async fn upsert_collection(
        &self,
        conn: &mut PgConnection,
        def: &CollectionDef,
    ) -> StoreResult<()> {
        sqlx::query(&format!(
            "INSERT INTO {DATA_SCHEMA}.collections (tenant_id, name, schema, unique_fields, indexed_fields,
                required_feature, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (tenant_id, name) DO UPDATE SET schema = excluded.schema,
                unique_fields = excluded.unique_fields, indexed_fields = excluded.indexed_fields,
                required_feature = excluded.required_feature, updated_at = excluded.updated_at"
        ))
        .bind(self.tenant.0)
        .bind(&def.name)
        .bind(def.schema.as_ref().map(Json))
        .bind(Json(&def.unique))
        .bind(Json(&def.indexed))
        .bind(&def.required_feature)
        .bind(def.created_at)
        .bind(def.updated_at)
        .execute(&mut *conn)
        .await
        .map_err(pg_error)?;
        Ok(())
    }

    pub(super) async fn set_sealed(&self, sealed: bool) -> StoreResult<()> {
        let mut tx = self.tx().await?;
        sqlx::query(&format!(
            "INSERT INTO {DATA_SCHEMA}.usage (tenant_id, sealed) VALUES ($1, $2)
             ON CONFLICT (tenant_id) DO UPDATE SET sealed = excluded.sealed"
        ))
        .bind(self.tenant.0)
        .bind(sealed)
        .execute(&mut *tx)
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)
    }

    /// Claims every record's values of the collection's unique fields anew,
    /// a page of records at a time (`take_over`: as a restore claims).
    pub(super) async fn rebuild_claims(
        &self,
        conn: &mut PgConnection,
        def: &CollectionDef,
        take_over: bool,
    ) -> StoreResult<()> {
        sqlx::query(&format!(
            "DELETE FROM {DATA_SCHEMA}.record_uniques WHERE tenant_id = $1 AND collection = $2"
        ))
        .bind(self.tenant.0)
        .bind(&def.name)
        .execute(&mut *conn)
        .await
        .map_err(pg_error)?;
        if def.unique.is_empty() {
            return Ok(());
        }
        let mut after = Uuid::nil();
        loop {
            let rows = sqlx::query(&format!(
                "SELECT {RECORD_COLUMNS} FROM {DATA_SCHEMA}.records
                 WHERE tenant_id = $1 AND collection = $2 AND id > $3 ORDER BY id LIMIT 1000"
            ))
            .bind(self.tenant.0)
            .bind(&def.name)
            .bind(after)
            .fetch_all(&mut *conn)
            .await
            .map_err(pg_error)?;
            let Some(last) = rows.last() else {
                return Ok(());
            };
            after = last.try_get("id").map_err(pg_error)?;
            for row in &rows {
                let record = record_from_row(row)?;
                let claims = unique_claims(&record.data, &def.unique);
                self.claim(conn, &def.name, &claims, record.id, take_over)
                    .await?;
            }
        }
    }

    pub(super) async fn add_usage(
        &self,
        conn: &mut PgConnection,
        records: i64,
        bytes: i64,
    ) -> StoreResult<()> {
        sqlx::query(&format!(
            "INSERT INTO {DATA_SCHEMA}.usage AS u (tenant_id, records, storage_bytes) VALUES ($1, $2, $3)
             ON CONFLICT (tenant_id) DO UPDATE
             SET records = u.records + excluded.records, storage_bytes = u.storage_bytes + excluded.storage_bytes"
        ))
        .bind(self.tenant.0)
        .bind(records)
        .bind(bytes)
        .execute(&mut *conn)
        .await
        .map_err(pg_error)?;
        Ok(())
    }

    /// The unique fields as stored now. Writes claim these rather than those
    /// of the caller's definition, which may come from a cache that has not
    /// yet seen another instance add a unique field.
    pub(super) async fn stored_unique(
        &self,
        conn: &mut PgConnection,
        collection: &str,
    ) -> StoreResult<Vec<String>> {
        let fields: Option<Json<Vec<String>>> = sqlx::query_scalar(&format!(
            "SELECT unique_fields FROM {DATA_SCHEMA}.collections WHERE tenant_id = $1 AND name = $2"
        ))
        .bind(self.tenant.0)
        .bind(collection)
        .fetch_optional(&mut *conn)
        .await
        .map_err(pg_error)?;
        Ok(fields.map(|Json(f)| f).unwrap_or_default())
    }

    /// A collection's unique fields as stored, if it is defined.
    pub(super) async fn stored_unique_opt(
        &self,
        conn: &mut PgConnection,
        collection: &str,
    ) -> StoreResult<Option<Vec<String>>> {
        let fields: Option<Json<Vec<String>>> = sqlx::query_scalar(&format!(
            "SELECT unique_fields FROM {DATA_SCHEMA}.collections WHERE tenant_id = $1 AND name = $2"
        ))
        .bind(self.tenant.0)
        .bind(collection)
        .fetch_optional(&mut *conn)
        .await
        .map_err(pg_error)?;
        Ok(fields.map(|Json(f)| f))
    }

    /// Takes a record's unique claims (`write_plan::unique_claims`), or
    /// (`take_over`) takes a claimed value over: a restore copies rows read
    /// at different times, and a value may still be claimed by a record
    /// whose newer version arrives later.
    pub(super) async fn claim(
        &self,
        conn: &mut PgConnection,
        collection: &str,
        claims: &[(String, String)],
        id: RecordId,
        take_over: bool,
    ) -> StoreResult<()> {
        let on_conflict = if take_over {
            " ON CONFLICT (tenant_id, collection, field, value) DO UPDATE SET record_id = excluded.record_id"
        } else {
            ""
        };
        for (field, key) in claims {
            sqlx::query(&format!(
                "INSERT INTO {DATA_SCHEMA}.record_uniques (tenant_id, collection, field, value, record_id)
                 VALUES ($1, $2, $3, $4, $5){on_conflict}"
            ))
            .bind(self.tenant.0)
            .bind(collection)
            .bind(field)
            .bind(key)
            .bind(id.0)
            .execute(&mut *conn)
            .await
            .map_err(|e| match pg_error(e) {
                StoreError::Conflict(_) => StoreError::Conflict(field.clone()),
                other => other,
            })?;
        }
        Ok(())
    }

    /// Restored records, a statement per step for each collection's batch
    /// (an import or a move writes them by the thousand): sizes of those
    /// present, one upsert, their claims released and taken anew, and the
    /// usage moved once. A key given twice keeps its last record, as
    /// one-by-one upserts would.
    pub(super) async fn restore_records(
        &self,
        conn: &mut PgConnection,
        records: &[(String, Record)],
    ) -> StoreResult<()> {
        let mut last: HashMap<(&str, Uuid), usize> = HashMap::new();
        for (i, (collection, r)) in records.iter().enumerate() {
            last.insert((collection.as_str(), r.id.0), i);
        }
        let mut by_collection: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
        for (i, (collection, r)) in records.iter().enumerate() {
            if last.get(&(collection.as_str(), r.id.0)) == Some(&i) {
                by_collection.entry(collection).or_default().push(r);
            }
        }
        let (mut added, mut bytes) = (0i64, 0i64);
        for (collection, rows) in by_collection {
            let ids: Vec<Uuid> = rows.iter().map(|r| r.id.0).collect();
            let sizes: Vec<i64> = rows
                .iter()
                .map(|r| r.data.to_string().len() as i64)
                .collect();
            // Plans of this lookup rely on the statistics `analyze` keeps
            // fresh during a bulk load (without them: a scan of the
            // tenant's whole collection per page).
            let old: HashMap<Uuid, i64> = sqlx::query_as::<_, (Uuid, i64)>(&format!(
                "SELECT id, size FROM {DATA_SCHEMA}.records
                 WHERE tenant_id = $1 AND collection = $2 AND id = ANY($3) FOR UPDATE"
            ))
            .bind(self.tenant.0)
            .bind(collection)
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await
            .map_err(pg_error)?
            .into_iter()
            .collect();
            sqlx::query(&format!(
                "INSERT INTO {DATA_SCHEMA}.records (tenant_id, collection, id, data, size, version,
                    created_at, updated_at, created_by)
                 SELECT $1, $2, r.* FROM unnest($3::uuid[], $4::jsonb[], $5::int8[], $6::int8[],
                    $7::timestamptz[], $8::timestamptz[], $9::uuid[])
                    AS r(id, data, size, version, created_at, updated_at, created_by)
                 ON CONFLICT (tenant_id, collection, id) DO UPDATE SET data = excluded.data,
                    size = excluded.size, version = excluded.version, created_at = excluded.created_at,
                    updated_at = excluded.updated_at, created_by = excluded.created_by"
            ))
            .bind(self.tenant.0)
            .bind(collection)
            .bind(&ids)
            .bind(rows.iter().map(|r| Json(&r.data)).collect::<Vec<_>>())
            .bind(&sizes)
            .bind(rows.iter().map(|r| r.version).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.created_at).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.updated_at).collect::<Vec<_>>())
            .bind(
                rows.iter()
                    .map(|r| r.created_by.map(|u| u.0))
                    .collect::<Vec<_>>(),
            )
            .execute(&mut *conn)
            .await
            .map_err(pg_error)?;
            sqlx::query(&format!(
                "DELETE FROM {DATA_SCHEMA}.record_uniques
                 WHERE tenant_id = $1 AND collection = $2 AND record_id = ANY($3)"
            ))
            .bind(self.tenant.0)
            .bind(collection)
            .bind(&ids)
            .execute(&mut *conn)
            .await
            .map_err(pg_error)?;
            let fields = self.stored_unique(conn, collection).await?;
            if !fields.is_empty() {
                for r in &rows {
                    let claims = unique_claims(&r.data, &fields);
                    self.claim(conn, collection, &claims, r.id, true).await?;
                }
            }
            for (r, size) in rows.iter().zip(&sizes) {
                match old.get(&r.id.0) {
                    Some(before) => bytes += size - before,
                    None => {
                        added += 1;
                        bytes += size;
                    }
                }
            }
        }
        if added != 0 || bytes != 0 {
            self.add_usage(conn, added, bytes).await?;
        }
        Ok(())
    }

    pub(super) async fn release_uniques(
        &self,
        conn: &mut PgConnection,
        collection: &str,
        id: RecordId,
    ) -> StoreResult<()> {
        sqlx::query(&format!(
            "DELETE FROM {DATA_SCHEMA}.record_uniques
             WHERE tenant_id = $1 AND collection = $2 AND record_id = $3"
        ))
        .bind(self.tenant.0)
        .bind(collection)
        .bind(id.0)
        .execute(&mut *conn)
        .await
        .map_err(pg_error)?;
        Ok(())
    }

    /// Version and size of a stored record, locked for the transaction.
    pub(super) async fn stored(
        &self,
        conn: &mut PgConnection,
        collection: &str,
        id: RecordId,
    ) -> StoreResult<Option<(i64, i64)>> {
        sqlx::query_as(&format!(
            "SELECT version, size FROM {DATA_SCHEMA}.records
             WHERE tenant_id = $1 AND collection = $2 AND id = $3 FOR UPDATE"
        ))
        .bind(self.tenant.0)
        .bind(collection)
        .bind(id.0)
        .fetch_optional(&mut *conn)
        .await
        .map_err(pg_error)
    }

    /// The stored sort tuple of the cursor's record, if it still sorts by
    /// the cursor's key.
    pub(super) async fn stored_sort_tuple(
        &self,
        conn: &mut PgConnection,
        def: &CollectionDef,
        field: &str,
        sort: &SortKey,
        after: &crate::record::RecordCursor,
    ) -> StoreResult<Option<SortTuple>> {
        let [rank, num, text] = field_sort_exprs(field);
        let row = sqlx::query(&format!(
            "SELECT {RECORD_COLUMNS}, {rank} AS k_rank, {num} AS k_num, {text} AS k_text
             FROM {DATA_SCHEMA}.records WHERE tenant_id = $1 AND collection = $2 AND id = $3"
        ))
        .bind(self.tenant.0)
        .bind(&def.name)
        .bind(after.id.0)
        .fetch_optional(&mut *conn)
        .await
        .map_err(pg_error)?;
        let Some(row) = row else {
            return Ok(None);
        };
        if crate::record::sort_value(&record_from_row(&row)?, sort) != after.key {
            return Ok(None);
        }
        Ok(Some((
            row.try_get("k_rank").map_err(pg_error)?,
            row.try_get("k_num").map_err(pg_error)?,
            row.try_get("k_text").map_err(pg_error)?,
        )))
    }

    /// Creates the indexes of `def` that are missing, as the owner.
    pub(super) async fn ensure_indexes(&self, def: &CollectionDef) -> StoreResult<()> {
        if def.indexed.is_empty() {
            return Ok(());
        }
        // Which exist: the catalog is readable by the runtime role.
        let names: Vec<String> = def
            .indexed
            .iter()
            .map(|f| format!("{DATA_SCHEMA}.{}", index_name(f)))
            .collect();
        let mut tx = self.tx().await?;
        let exists: Vec<bool> =
            sqlx::query_scalar("SELECT to_regclass(n) IS NOT NULL FROM unnest($1::text[]) WITH ORDINALITY AS t(n, i) ORDER BY i")
                .bind(&names)
                .fetch_all(&mut *tx)
                .await
                .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        let missing: Vec<&String> = def
            .indexed
            .iter()
            .zip(exists.iter().copied().chain(std::iter::repeat(false)))
            .filter(|(_, e)| !e)
            .map(|(f, _)| f)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        match &self.backend {
            Backend::Shared { admin, .. } => {
                let mut conn = admin.acquire().await.map_err(pg_error)?;
                for field in missing {
                    create_index(&mut conn, field).await?;
                }
                Ok(())
            }
            Backend::Dedicated { admin, .. } => {
                let mut conn = admin.connect().await.map_err(pg_error)?;
                let mut result = Ok(());
                for field in missing {
                    result = create_index(&mut conn, field).await;
                    if result.is_err() {
                        break;
                    }
                }
                let closed = conn.close().await.map_err(pg_error);
                result.and(closed)
            }
        }
    }
}
