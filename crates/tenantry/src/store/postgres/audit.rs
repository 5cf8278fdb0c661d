//! The audit chains on PostgreSQL. The control schema's `audit_log` and
//! `platform_audit` and the tenant-data schema's `audit_log` share one
//! layout, so appending, listing and walking a chain are written once here.
//! Tenant chains are read and written inside the tenant's transaction
//! (`tenant_tx`): row-level security holds for them as for any tenant data.

use super::col;
use super::pg_error;
use crate::audit::{AuditChain, AuditEntry, AuditFilter, NewAuditEntry};
use crate::ids::TenantId;
use crate::store::StoreResult;
use chrono::Utc;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Postgres, QueryBuilder};
use uuid::Uuid;

/// Advisory-lock namespace of chain appends (first key of the two-key form).
const LOCK_AUDIT: i32 = 0x5475_0002;

/// Where one chain is stored.
pub(super) struct ChainAt {
    table: &'static str,
    tenant: Option<TenantId>,
    kind: AuditChain,
}

impl ChainAt {
    pub(super) fn platform() -> Self {
        Self {
            table: "public.platform_audit",
            tenant: None,
            kind: AuditChain::Platform,
        }
    }

    pub(super) fn control(tenant: TenantId) -> Self {
        Self {
            table: "public.audit_log",
            tenant: Some(tenant),
            kind: AuditChain::Control,
        }
    }

    pub(super) fn data(tenant: TenantId) -> Self {
        Self {
            table: "tenant_data.audit_log",
            tenant: Some(tenant),
            kind: AuditChain::Data,
        }
    }

    /// `SELECT * FROM <table> WHERE <this chain>`; the table name is ours.
    fn select(&self) -> QueryBuilder<'static, Postgres> {
        let mut q = QueryBuilder::new(format!("SELECT * FROM {} WHERE ", self.table));
        match self.tenant {
            Some(t) => q.push("tenant_id = ").push_bind(t.0),
            None => q.push("true"),
        };
        q
    }

    /// `new` linked after `head` (read under the chain's lock), with its seq.
    pub(super) fn link(
        &self,
        head: Option<(i64, String)>,
        new: &NewAuditEntry,
        time: chrono::DateTime<Utc>,
    ) -> (i64, AuditEntry) {
        AuditEntry::link_one_after(self.kind, self.tenant, head, new, time)
    }

    fn entry(&self, row: &PgRow) -> StoreResult<AuditEntry> {
        Ok(AuditEntry {
            id: col(row, "id")?,
            tenant_id: col::<Option<Uuid>>(row, "tenant_id")?.map(TenantId),
            actor: col(row, "actor")?,
            actor_scope: col(row, "actor_scope")?,
            action: col(row, "action")?,
            resource: col(row, "resource")?,
            at: col(row, "at")?,
            request_id: col(row, "request_id")?,
            prev_hash: col(row, "prev_hash")?,
            hash: col(row, "hash")?,
            chain: self.kind,
        })
    }
}

/// Appends inside the caller's transaction at `time`, committing with the
/// change it records. The chain's lock is taken before its head is read, so
/// two appends cannot both link to the same predecessor (a row lock on the
/// head would not cover an empty chain).
pub(super) async fn append_at(
    conn: &mut PgConnection,
    at: &ChainAt,
    new: &NewAuditEntry,
    time: chrono::DateTime<Utc>,
) -> StoreResult<AuditEntry> {
    let mut linked = append_all_at(conn, at, [(new, time)]).await?;
    linked
        .pop()
        .ok_or_else(|| crate::store::StoreError::Internal("no audit entry appended".into()))
}

/// Appends entries in order, each at its own time, under one lock and in
/// one statement per thousand (an import relinks a whole chain).
pub(super) async fn append_all_at<'a>(
    conn: &mut PgConnection,
    at: &ChainAt,
    entries: impl IntoIterator<Item = (&'a NewAuditEntry, chrono::DateTime<Utc>)>,
) -> StoreResult<Vec<AuditEntry>> {
    let mut entries = entries.into_iter().peekable();
    if entries.peek().is_none() {
        return Ok(Vec::new());
    }
    // A tenant's data chain needs no lock of its own: every write to the
    // tenant's data, each append to its chain among them, holds the
    // tenant's usage row first (`lock_usage`, `write_tx`, restores).
    if at.kind != AuditChain::Data {
        let lock_key = at
            .tenant
            .map_or_else(|| "platform".to_owned(), |t| t.0.to_string());
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(LOCK_AUDIT)
            .bind(lock_key)
            .execute(&mut *conn)
            .await
            .map_err(pg_error)?;
    }
    let linked = AuditEntry::link_after(at.kind, at.tenant, head(conn, at).await?, entries);
    insert_all(conn, at, &linked).await?;
    Ok(linked.into_iter().map(|(_, e)| e).collect())
}

/// Stores entries as they are, each at its seq (a move copies a chain
/// verbatim), a thousand rows per statement.
pub(super) async fn insert_all(
    conn: &mut PgConnection,
    at: &ChainAt,
    entries: &[(i64, AuditEntry)],
) -> StoreResult<()> {
    // 11 parameters a row, under PostgreSQL's 65535 per statement.
    for chunk in entries.chunks(1000) {
        let mut q = QueryBuilder::<Postgres>::new("");
        push_insert(&mut q, at, chunk);
        q.build().execute(&mut *conn).await.map_err(pg_error)?;
    }
    Ok(())
}

/// The `INSERT` of `entries` into the chain's table, pushed onto `q` (for
/// a statement of its own, or a step of a record write's one statement).
pub(super) fn push_insert<'a>(
    q: &mut QueryBuilder<'a, Postgres>,
    at: &ChainAt,
    entries: &'a [(i64, AuditEntry)],
) {
    q.push(format_args!(
        "INSERT INTO {} (tenant_id, seq, id, actor, actor_scope, action, resource, at, request_id, prev_hash, hash) ",
        at.table
    ));
    let tenant = at.tenant.map(|t| t.0);
    q.push_values(entries, |mut row, (seq, entry)| {
        row.push_bind(tenant)
            .push_bind(*seq)
            .push_bind(entry.id)
            .push_bind(&entry.actor)
            .push_bind(&entry.actor_scope)
            .push_bind(&entry.action)
            .push_bind(&entry.resource)
            .push_bind(entry.at)
            .push_bind(&entry.request_id)
            .push_bind(&entry.prev_hash)
            .push_bind(&entry.hash);
    });
}

/// The chain's last entry: `(seq, hash)`.
pub(super) async fn head(
    conn: &mut PgConnection,
    at: &ChainAt,
) -> StoreResult<Option<(i64, String)>> {
    let mut q = at.select();
    q.push(" ORDER BY seq DESC LIMIT 1");
    let row = q
        .build()
        .fetch_optional(&mut *conn)
        .await
        .map_err(pg_error)?;
    row.map(|r| Ok((col(&r, "seq")?, col(&r, "hash")?)))
        .transpose()
}

/// Entries after `after_seq` matching `filter`, in link order, with each
/// entry's seq: seq is the chain's own order, so a cursor made of seqs never
/// skips an entry (ids come from clocks and are taken before commit).
pub(super) async fn list(
    conn: &mut PgConnection,
    at: &ChainAt,
    filter: &AuditFilter,
    after_seq: i64,
    limit: u32,
) -> StoreResult<Vec<(i64, AuditEntry)>> {
    let mut q = at.select();
    crate::store::push_audit_page(&mut q, filter, after_seq, limit);
    let rows = q.build().fetch_all(&mut *conn).await.map_err(pg_error)?;
    rows.iter()
        .map(|r| Ok((col(r, "seq")?, at.entry(r)?)))
        .collect()
}
