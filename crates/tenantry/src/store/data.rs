//! The data plane's storage: a [`DataPlane`] provisions, opens and purges
//! each tenant's storage, and hands out a [`TenantData`] handle bound to one
//! tenant. Nothing below the handle takes a tenant id from its caller.

use super::StoreResult;
use crate::Tenant;
use crate::audit::{AuditEntry, AuditFilter, NewAuditEntry};
use crate::ids::RecordId;
use crate::record::{CollectionDef, Record, RecordQuery};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::sync::Arc;

/// `group_counts`' answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GroupCounts {
    /// Records in the collection.
    pub total: u64,
    /// The largest groups, largest first.
    pub groups: Vec<(Value, u64)>,
    /// Groups beyond `max_groups` were left out.
    pub truncated: bool,
}

/// Builds `GroupCounts` from `(key as JSON text, count, total)` rows, at
/// most `max_groups + 1` of them (one more tells that there were more).
pub(crate) fn group_counts_from(
    rows: Vec<(Option<String>, i64, i64)>,
    max_groups: u32,
) -> GroupCounts {
    let total = rows.first().map_or(0, |(_, _, t)| (*t).max(0) as u64);
    let truncated = rows.len() > max_groups as usize;
    let groups = rows
        .into_iter()
        .take(max_groups as usize)
        .map(|(k, n, _)| {
            let key = k
                .and_then(|k| serde_json::from_str(&k).ok())
                .unwrap_or(Value::Null);
            (key, n.max(0) as u64)
        })
        .collect();
    GroupCounts {
        total,
        groups,
        truncated,
    }
}

/// What a tenant's data occupies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    pub records: u64,
    /// Bytes of the records' data as stored.
    pub storage_bytes: u64,
}

/// Data written into a tenant's copy as it was read elsewhere (an export, or
/// the copy a move leaves), in one transaction. Unlike the request writes it
/// keeps versions and timestamps, ignores the seal (jobs restore into sealed
/// copies) and enforces no quota; unique claims and usage follow the
/// records, so they are right whatever order the rows arrive in.
#[derive(Clone, Debug, Default)]
pub struct Restore {
    /// Definitions created or replaced as given (a changed unique field
    /// rebuilds the collection's claims).
    pub collections: Vec<CollectionDef>,
    /// Records created or replaced as given: `(collection, record)`.
    pub records: Vec<(String, Record)>,
    /// Records deleted if present.
    pub removed: Vec<(String, RecordId)>,
    /// Data-chain entries stored exactly as they are, with their seq: the
    /// same tenant's chain, continued where this copy's head is.
    pub audit: Vec<(i64, AuditEntry)>,
    /// Entries linked onto this copy's chain as new links (new id, seq and
    /// hashes; actor, action, resource, time and request id kept): another
    /// tenant's history, imported.
    pub relink: Vec<(NewAuditEntry, DateTime<Utc>)>,
    /// Appended last, after `relink` (the restore's own record).
    pub append: Option<NewAuditEntry>,
}

impl Restore {
    pub fn is_empty(&self) -> bool {
        self.collections.is_empty()
            && self.records.is_empty()
            && self.removed.is_empty()
            && self.audit.is_empty()
            && self.relink.is_empty()
            && self.append.is_none()
    }
}

#[async_trait]
pub trait DataPlane: Send + Sync + 'static {
    /// Makes the tenant's storage usable (a dedicated database is created and
    /// migrated); returns once requests can be served.
    async fn provision(&self, tenant: &Tenant) -> StoreResult<()>;
    /// A handle bound to this tenant alone.
    async fn handle(&self, tenant: &Tenant) -> StoreResult<Arc<dyn TenantData>>;
    /// Removes everything the tenant stored (a dedicated database file too).
    async fn purge(&self, tenant: &Tenant) -> StoreResult<()>;
    /// The servers new tenants are placed across (none: one database holds all).
    fn placement_servers(&self) -> &[crate::placement::Server] {
        &[]
    }
    /// The tenant-data schema version a database has once migrated.
    fn schema_version(&self) -> i64;
    /// Brings a dedicated tenant's own database to `schema_version()`.
    async fn migrate_tenant(&self, tenant: &Tenant) -> StoreResult<()>;
}

/// One tenant's collections and records.
#[async_trait]
pub trait TenantData: Send + Sync {
    /// Up to `limit` definitions with names after `after` (byte order).
    async fn collections_after(&self, after: &str, limit: u32) -> StoreResult<Vec<CollectionDef>>;

    /// Every definition, by name (bounded by the plan's `max_collections`).
    async fn collections(&self) -> StoreResult<Vec<CollectionDef>> {
        const PAGE: u32 = 1000;
        let mut all: Vec<CollectionDef> = Vec::new();
        loop {
            let after = all.last().map_or("", |d| d.name.as_str());
            let page = self.collections_after(after, PAGE).await?;
            let done = page.len() < PAGE as usize;
            all.extend(page);
            if done {
                return Ok(all);
            }
        }
    }
    async fn collection(&self, name: &str) -> StoreResult<Option<CollectionDef>>;
    /// Creates or replaces a definition and its indexes; true when created.
    /// `Conflict(field)` when existing records already break a new unique field.
    async fn put_collection(&self, def: &CollectionDef, audit: &NewAuditEntry)
    -> StoreResult<bool>;

    /// Defines a collection unless it already exists (implicit creation on a
    /// first write must never overwrite an admin's definition); audited only
    /// when it creates.
    async fn create_collection_if_absent(
        &self,
        def: &CollectionDef,
        audit: &NewAuditEntry,
    ) -> StoreResult<()>;

    /// `Conflict(field)` on a unique violation, `QuotaExceeded` past `max_storage`.
    async fn insert_record(
        &self,
        def: &CollectionDef,
        record: &Record,
        max_storage: Option<u64>,
        audit: &NewAuditEntry,
    ) -> StoreResult<()>;
    async fn record(&self, collection: &str, id: RecordId) -> StoreResult<Option<Record>>;
    async fn list_records(
        &self,
        def: &CollectionDef,
        query: &RecordQuery,
    ) -> StoreResult<Vec<Record>>;
    /// Replaces data, version and `updated_at` when the stored version is
    /// `expected_version`: `VersionMismatch` otherwise, `NotFound` if gone.
    async fn update_record(
        &self,
        def: &CollectionDef,
        record: &Record,
        expected_version: i64,
        max_storage: Option<u64>,
        audit: &NewAuditEntry,
    ) -> StoreResult<()>;
    /// Deletes, if `expected_version` is absent or matches.
    async fn delete_record(
        &self,
        def: &CollectionDef,
        id: RecordId,
        expected_version: Option<i64>,
        audit: &NewAuditEntry,
    ) -> StoreResult<()>;
    /// Count per value of `field` (missing → null), and the total: the
    /// `max_groups` largest groups (ties by value), and whether there were
    /// more (a field with a distinct value per record would otherwise send
    /// one group per record).
    async fn group_counts(
        &self,
        collection: &str,
        field: &str,
        max_groups: u32,
    ) -> StoreResult<GroupCounts>;
    async fn usage(&self) -> StoreResult<Usage>;

    /// Entries of the tenant's data chain after `after_seq` matching
    /// `filter`, in link order, with their seq.
    async fn list_audit(
        &self,
        filter: &AuditFilter,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<(i64, AuditEntry)>>;

    // What jobs (export, import, move, delete) use besides the above.

    /// The data chain's last entry: `(seq, hash)`; `None` when empty.
    async fn audit_head(&self) -> StoreResult<Option<(i64, String)>>;

    /// Every record of every collection, in `(collection, id)` order, after
    /// `after`: a job reads a tenant page by page in constant memory.
    async fn scan_records(
        &self,
        after: Option<&(String, RecordId)>,
        limit: u32,
    ) -> StoreResult<Vec<(String, Record)>>;

    /// The largest record id of `collection` now (ids sort as their bytes
    /// within a collection on every engine): what a move's copy must reach.
    async fn last_record_id(&self, collection: &str) -> StoreResult<Option<RecordId>>;

    /// Writes `restore` in one transaction.
    async fn restore(&self, restore: &Restore) -> StoreResult<()>;

    /// Refuses this copy's writes from now on, on every instance: writes
    /// already in a transaction finish first, later ones fail with
    /// `Sealed`. A move seals the copy it leaves, a deletion the copy it
    /// purges, an import the copy it fills.
    async fn seal(&self) -> StoreResult<()>;
    async fn unseal(&self) -> StoreResult<()>;

    /// Removes the tenant's collections, records and claims from this copy
    /// and zeroes its usage, keeping the audit chain and the seal: a restore
    /// that must start over.
    async fn clear(&self) -> StoreResult<()>;
}
