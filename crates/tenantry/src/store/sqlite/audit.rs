//! The audit chains on SQLite. The control store's `audit_log` and
//! `platform_audit` and a tenant database's `audit_log` share one layout, so
//! appending, listing and walking a chain are written once here.

use super::{db_error, opt_uuid_col, uuid_col};
use crate::audit::{AuditChain, AuditEntry, AuditFilter, NewAuditEntry};
use crate::ids::TenantId;
use crate::store::StoreResult;
use chrono::{SubsecRound, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool};

/// Where one chain is stored.
pub(super) struct ChainAt {
    table: &'static str,
    tenant: Option<TenantId>,
    kind: AuditChain,
}

impl ChainAt {
    pub(super) fn platform() -> Self {
        Self {
            table: "platform_audit",
            tenant: None,
            kind: AuditChain::Platform,
        }
    }

    /// A tenant's chain in an `audit_log` table (`Control` or `Data`).
    pub(super) fn tenant(kind: AuditChain, tenant: TenantId) -> Self {
        Self {
            table: "audit_log",
            tenant: Some(tenant),
            kind,
        }
    }

    /// `SELECT * FROM <table> WHERE <this chain>`; the table name is ours.
    fn select(&self) -> QueryBuilder<'static, Sqlite> {
        let mut q = QueryBuilder::new(format!("SELECT * FROM {} WHERE ", self.table));
        match self.tenant {
            Some(t) => q.push("tenant_id = ").push_bind(t.to_string()),
            None => q.push("1 = 1"),
        };
        q
    }

    fn entry(&self, row: &SqliteRow) -> StoreResult<AuditEntry> {
        Ok(AuditEntry {
            id: uuid_col(row, "id")?,
            tenant_id: opt_uuid_col(row, "tenant_id")?,
            actor: row.try_get("actor").map_err(db_error)?,
            actor_scope: row.try_get("actor_scope").map_err(db_error)?,
            action: row.try_get("action").map_err(db_error)?,
            resource: row.try_get("resource").map_err(db_error)?,
            at: row.try_get("at").map_err(db_error)?,
            request_id: row.try_get("request_id").map_err(db_error)?,
            prev_hash: row.try_get("prev_hash").map_err(db_error)?,
            hash: row.try_get("hash").map_err(db_error)?,
            chain: self.kind,
        })
    }
}

/// Appends inside the caller's write transaction (begun IMMEDIATE, so the
/// write lock is held before the head is read: two appends cannot both link
/// to the same predecessor), committing with the change it records.
pub(super) async fn append(
    conn: &mut SqliteConnection,
    at: &ChainAt,
    new: &NewAuditEntry,
) -> StoreResult<AuditEntry> {
    let mut q = at.select();
    q.push(" ORDER BY seq DESC LIMIT 1");
    let head = q
        .build()
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error)?;
    let (seq, prev) = match head {
        Some(row) => {
            let seq: i64 = row.try_get("seq").map_err(db_error)?;
            let hash: String = row.try_get("hash").map_err(db_error)?;
            (seq + 1, Some(hash))
        }
        None => (1, None),
    };
    // Microseconds, as hashed (and as PostgreSQL keeps them): the entry
    // stored is the entry that was hashed.
    let now = Utc::now().trunc_subsecs(6);
    let entry = AuditEntry::chain(at.kind, at.tenant, new, prev, now);
    let sql = format!(
        "INSERT INTO {} (tenant_id, seq, id, actor, actor_scope, action, resource, at, request_id, prev_hash, hash)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        at.table
    );
    sqlx::query(&sql)
        .bind(at.tenant.map(|t| t.to_string()))
        .bind(seq)
        .bind(entry.id.to_string())
        .bind(&entry.actor)
        .bind(&entry.actor_scope)
        .bind(&entry.action)
        .bind(&entry.resource)
        .bind(entry.at)
        .bind(&entry.request_id)
        .bind(&entry.prev_hash)
        .bind(&entry.hash)
        .execute(&mut *conn)
        .await
        .map_err(db_error)?;
    Ok(entry)
}

/// Entries after `after_seq` matching `filter`, in link order, with each
/// entry's seq: seq is the chain's own order, so a cursor made of seqs never
/// skips an entry (ids come from clocks and are taken before commit).
pub(super) async fn list(
    pool: &SqlitePool,
    at: &ChainAt,
    filter: &AuditFilter,
    after_seq: i64,
    limit: u32,
) -> StoreResult<Vec<(i64, AuditEntry)>> {
    let mut q = at.select();
    if let Some(actor) = &filter.actor {
        q.push(" AND actor = ").push_bind(actor.clone());
    }
    if let Some(action) = &filter.action {
        q.push(" AND action = ").push_bind(action.clone());
    }
    if let Some(since) = filter.since {
        q.push(" AND at >= ").push_bind(since);
    }
    q.push(" AND seq > ")
        .push_bind(after_seq)
        .push(" ORDER BY seq LIMIT ")
        .push_bind(i64::from(limit.max(1)));
    let rows = q.build().fetch_all(pool).await.map_err(db_error)?;
    rows.iter()
        .map(|r| Ok((r.try_get("seq").map_err(db_error)?, at.entry(r)?)))
        .collect()
}
