//! The audit chains on SQLite. The control store's `audit_log` and
//! `platform_audit` and a tenant database's `audit_log` share one layout, so
//! appending, listing and walking a chain are written once here.

use super::{db_error, opt_uuid_col, uuid_col};
use crate::audit::{AuditChain, AuditEntry, AuditFilter, NewAuditEntry};
use crate::ids::TenantId;
use crate::store::{StoreError, StoreResult};
use chrono::Utc;
use rusqlite::OptionalExtension;
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
/// to the same predecessor), committing with the change it records, at `time`.
pub(super) async fn append_at(
    conn: &mut SqliteConnection,
    at: &ChainAt,
    new: &NewAuditEntry,
    time: chrono::DateTime<Utc>,
) -> StoreResult<AuditEntry> {
    let mut q = at.select();
    q.push(" ORDER BY seq DESC LIMIT 1");
    let head = q
        .build()
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_error)?
        .map(|row| {
            Ok::<_, StoreError>((
                row.try_get("seq").map_err(db_error)?,
                row.try_get("hash").map_err(db_error)?,
            ))
        })
        .transpose()?;
    let (seq, entry) = AuditEntry::link_one_after(at.kind, at.tenant, head, new, time);
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
    crate::store::push_audit_page(&mut q, filter, after_seq, limit);
    let rows = q.build().fetch_all(pool).await.map_err(db_error)?;
    rows.iter()
        .map(|r| Ok((r.try_get("seq").map_err(db_error)?, at.entry(r)?)))
        .collect()
}

/// `append` on a direct (rusqlite) write transaction: the data chain is
/// written beside the records, which are written that way.
pub(super) fn append_direct_at(
    tx: &rusqlite::Connection,
    at: &ChainAt,
    new: &NewAuditEntry,
    time: chrono::DateTime<Utc>,
) -> StoreResult<AuditEntry> {
    let (seq, entry) =
        AuditEntry::link_one_after(at.kind, at.tenant, head_direct(tx, at)?, new, time);
    insert_direct(tx, at, seq, &entry)?;
    Ok(entry)
}

/// The chain's last entry: `(seq, hash)`.
pub(super) fn head_direct(
    conn: &rusqlite::Connection,
    at: &ChainAt,
) -> StoreResult<Option<(i64, String)>> {
    use super::direct::direct_error;
    let head_sql = format!(
        "SELECT seq, hash FROM {} WHERE tenant_id IS ?1 ORDER BY seq DESC LIMIT 1",
        at.table
    );
    let tenant = at.tenant.map(|t| t.to_string());
    conn.prepare_cached(&head_sql)
        .map_err(direct_error)?
        .query_row([&tenant], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .map_err(direct_error)
}

/// Stores an entry as it is, at `seq` (a move copies a chain verbatim).
pub(super) fn insert_direct(
    tx: &rusqlite::Connection,
    at: &ChainAt,
    seq: i64,
    entry: &AuditEntry,
) -> StoreResult<()> {
    use super::direct::direct_error;
    let insert_sql = format!(
        "INSERT INTO {} (tenant_id, seq, id, actor, actor_scope, action, resource, at, request_id, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        at.table
    );
    tx.prepare_cached(&insert_sql)
        .map_err(direct_error)?
        .execute(rusqlite::params![
            at.tenant.map(|t| t.to_string()),
            seq,
            entry.id.to_string(),
            entry.actor,
            entry.actor_scope,
            entry.action,
            entry.resource,
            stored_time(entry.at),
            entry.request_id,
            entry.prev_hash,
            entry.hash,
        ])
        .map_err(direct_error)?;
    Ok(())
}

/// `list` on a direct (rusqlite) connection.
pub(super) fn list_direct(
    conn: &rusqlite::Connection,
    at: &ChainAt,
    filter: &AuditFilter,
    after_seq: i64,
    limit: u32,
) -> StoreResult<Vec<(i64, AuditEntry)>> {
    use super::direct::direct_error;
    use rusqlite::types::Value as V;
    let mut sql = format!("SELECT * FROM {} WHERE tenant_id IS ?", at.table);
    let mut params: Vec<V> = vec![at.tenant.map_or(V::Null, |t| V::Text(t.to_string()))];
    for (column, value) in [("actor", &filter.actor), ("action", &filter.action)] {
        if let Some(value) = value {
            sql.push_str(&format!(" AND {column} = ?"));
            params.push(V::Text(value.clone()));
        }
    }
    if let Some(since) = filter.since {
        sql.push_str(" AND at >= ?");
        params.push(V::Text(stored_time(since)));
    }
    sql.push_str(" AND seq > ? ORDER BY seq LIMIT ?");
    params.push(V::Integer(after_seq));
    params.push(V::Integer(i64::from(limit.max(1))));
    let mut statement = conn.prepare_cached(&sql).map_err(direct_error)?;
    let rows = statement
        .query_map(rusqlite::params_from_iter(&params), |r| {
            Ok((
                r.get::<_, i64>("seq")?,
                r.get::<_, String>("id")?,
                r.get::<_, String>("actor")?,
                r.get::<_, String>("actor_scope")?,
                r.get::<_, String>("action")?,
                r.get::<_, String>("resource")?,
                r.get::<_, String>("at")?,
                r.get::<_, Option<String>>("request_id")?,
                r.get::<_, Option<String>>("prev_hash")?,
                r.get::<_, String>("hash")?,
            ))
        })
        .map_err(direct_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(direct_error)?;
    rows.into_iter()
        .map(
            |(seq, id, actor, actor_scope, action, resource, time, request_id, prev_hash, hash)| {
                let entry = AuditEntry {
                    id: id
                        .parse()
                        .map_err(|_| StoreError::Internal(format!("bad audit id {id:?}")))?,
                    tenant_id: at.tenant,
                    actor,
                    actor_scope,
                    action,
                    resource,
                    at: crate::store::parse_time(&time)?,
                    request_id,
                    prev_hash,
                    hash,
                    chain: at.kind,
                };
                Ok((seq, entry))
            },
        )
        .collect()
}

/// How a time is written to an audit row: exactly as sqlx writes a
/// `DateTime<Utc>` (RFC 3339, `+00:00`, `AutoSi` fraction), so rows written
/// by either compare alike with a `since` bound the same way.
fn stored_time(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
}
