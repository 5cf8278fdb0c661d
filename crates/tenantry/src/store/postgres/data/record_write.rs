//! A record's insert, update or delete on PostgreSQL: BEGIN with the
//! tenant's id, the tenant's usage row locked (`write_tx`), one read of all
//! the write decides on (`write_view`), the unique claims if any, one
//! statement for the row, the audit entry and the usage delta, and COMMIT
//! (`finish_write`). The plan in between is `write_plan`'s, as on SQLite.

use super::tenant::PgTenantData;
use crate::audit::NewAuditEntry;
use crate::ids::RecordId;
use crate::record::Record;
use crate::store::postgres::audit::{self, ChainAt};
use crate::store::postgres::{DATA_SCHEMA, pg_error};
use crate::store::write_plan::{Planned, StoredRow};
use crate::store::{StoreError, StoreResult};
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres, QueryBuilder};
use uuid::Uuid;

/// What a record write reads before it decides (`write_view`).
pub(super) struct WriteView {
    /// The tenant's stored bytes, for the quota.
    pub(super) used: u64,
    pub(super) unique: Vec<String>,
    /// The record's stored row, if there is one.
    pub(super) row: Option<StoredRow>,
    /// The data chain's last entry, `(seq, hash)`.
    head: Option<(i64, String)>,
}

/// The change a record write makes to its row.
pub(super) enum RowChange<'a> {
    /// A new record of the given size in bytes.
    Insert(&'a Record, i64),
    /// A record's new data and version, of the given size.
    Update(&'a Record, i64),
    Delete(RecordId),
}

impl RowChange<'_> {
    fn id(&self) -> RecordId {
        match self {
            Self::Insert(r, _) | Self::Update(r, _) => r.id,
            Self::Delete(id) => *id,
        }
    }
}

/// ` WHERE` of one record's row.
fn push_record_key<'a>(
    q: &mut QueryBuilder<'a, Postgres>,
    tenant: Uuid,
    collection: &'a str,
    id: RecordId,
) {
    q.push(" WHERE tenant_id = ")
        .push_bind(tenant)
        .push(" AND collection = ")
        .push_bind(collection)
        .push(" AND id = ")
        .push_bind(id.0);
}

impl PgTenantData {
    /// A record write's transaction, the tenant's usage row locked
    /// (`lock_usage`, a statement of its own: see `tenant_tx` on why not
    /// inside BEGIN's). What the lock read is read again by `write_view`,
    /// with the rest, in the snapshot after it.
    pub(super) async fn write_tx(&self) -> StoreResult<sqlx::Transaction<'static, Postgres>> {
        let mut tx = self.tx().await?;
        self.lock_usage(&mut tx).await?;
        Ok(tx)
    }

    /// Everything a record write decides on, read in one statement under
    /// the usage row's lock (`write_tx`): the usage row itself, the
    /// collection's unique fields as stored (not those of a cached
    /// definition, which may not yet have seen another instance add one),
    /// the record's row and the data chain's head.
    pub(super) async fn write_view(
        &self,
        conn: &mut PgConnection,
        collection: &str,
        id: RecordId,
    ) -> StoreResult<WriteView> {
        type Row = (
            i64,
            bool,
            Option<Json<Vec<String>>>,
            Option<i64>,
            Option<i64>,
            Option<i64>,
            Option<String>,
        );
        let row: Option<Row> = sqlx::query_as(&format!(
            "SELECT u.storage_bytes, u.sealed,
                (SELECT c.unique_fields FROM {DATA_SCHEMA}.collections c
                 WHERE c.tenant_id = $1 AND c.name = $2),
                r.version, r.size, h.seq, h.hash
             FROM {DATA_SCHEMA}.usage u
             LEFT JOIN {DATA_SCHEMA}.records r
                ON r.tenant_id = $1 AND r.collection = $2 AND r.id = $3
             LEFT JOIN LATERAL (SELECT a.seq, a.hash FROM {DATA_SCHEMA}.audit_log a
                WHERE a.tenant_id = $1 ORDER BY a.seq DESC LIMIT 1) h ON true
             WHERE u.tenant_id = $1"
        ))
        .bind(self.tenant.0)
        .bind(collection)
        .bind(id.0)
        .fetch_optional(&mut *conn)
        .await
        .map_err(pg_error)?;
        // No usage row: the tenant's data does not live here (see `lock_usage`).
        let (bytes, sealed, unique, version, size, seq, hash) = row.ok_or(StoreError::Absent)?;
        if sealed {
            return Err(StoreError::Sealed);
        }
        Ok(WriteView {
            used: bytes.max(0) as u64,
            unique: unique.map(|Json(f)| f).unwrap_or_default(),
            row: version.zip(size),
            head: seq.zip(hash),
        })
    }

    /// Executes a planned record write on the transaction of its
    /// `write_view` and commits it: the unique claims (a statement each, so
    /// that a conflict names its field), then the row change, the audit
    /// entry and the usage delta in one statement.
    pub(super) async fn finish_write(
        &self,
        mut tx: sqlx::Transaction<'static, Postgres>,
        collection: &str,
        change: RowChange<'_>,
        view: WriteView,
        plan: &Planned,
        entry: &NewAuditEntry,
    ) -> StoreResult<()> {
        let id = change.id();
        // The old claims go before the new ones are taken (an update keeping
        // its unique value claims it again); with none to take they go in
        // the one statement below.
        let release_first = plan.release && !plan.claims.is_empty();
        if release_first {
            self.release_uniques(&mut tx, collection, id).await?;
        }
        self.claim(&mut tx, collection, &plan.claims, id, false)
            .await?;
        let chain = ChainAt::data(self.tenant);
        let linked = [chain.link(view.head, entry, self.clock.now())];
        let t = self.tenant.0;
        let mut q = QueryBuilder::<Postgres>::new("WITH w AS (");
        match change {
            RowChange::Insert(r, size) => {
                q.push(format_args!(
                    "INSERT INTO {DATA_SCHEMA}.records (tenant_id, collection, id, data, size, version,
                        created_at, updated_at, created_by) VALUES ("
                ));
                q.separated(", ")
                    .push_bind(t)
                    .push_bind(collection)
                    .push_bind(r.id.0)
                    .push_bind(Json(&r.data))
                    .push_bind(size)
                    .push_bind(r.version)
                    .push_bind(r.created_at)
                    .push_bind(r.updated_at)
                    .push_bind(r.created_by.map(|u| u.0));
                q.push(")");
            }
            RowChange::Update(r, size) => {
                q.push(format_args!("UPDATE {DATA_SCHEMA}.records SET data = "))
                    .push_bind(Json(&r.data))
                    .push(", size = ")
                    .push_bind(size)
                    .push(", version = ")
                    .push_bind(r.version)
                    .push(", updated_at = ")
                    .push_bind(r.updated_at);
                push_record_key(&mut q, t, collection, id);
            }
            RowChange::Delete(_) => {
                q.push(format_args!("DELETE FROM {DATA_SCHEMA}.records"));
                push_record_key(&mut q, t, collection, id);
            }
        }
        if plan.release && !release_first {
            q.push(format_args!(
                "), released AS (DELETE FROM {DATA_SCHEMA}.record_uniques
                 WHERE tenant_id = "
            ))
            .push_bind(t)
            .push(" AND collection = ")
            .push_bind(collection)
            .push(" AND record_id = ")
            .push_bind(id.0);
        }
        q.push("), entry AS (");
        audit::push_insert(&mut q, &chain, &linked);
        q.push(format_args!(
            ") UPDATE {DATA_SCHEMA}.usage SET records = records + "
        ))
        .push_bind(plan.records)
        .push(", storage_bytes = storage_bytes + ")
        .push_bind(plan.bytes)
        .push(" WHERE tenant_id = ")
        .push_bind(t);
        q.build().execute(&mut *tx).await.map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)
    }
}
