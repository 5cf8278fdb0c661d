//! The data plane's storage: a [`DataPlane`] provisions, opens and purges
//! each tenant's storage, and hands out a [`TenantData`] handle bound to one
//! tenant. Nothing below the handle takes a tenant id from its caller.

use super::StoreResult;
use crate::Tenant;
use crate::audit::{AuditEntry, AuditFilter, NewAuditEntry};
use crate::ids::RecordId;
use crate::record::{CollectionDef, Record, RecordQuery};
use async_trait::async_trait;
use serde_json::Value;
use std::sync::Arc;

/// What a tenant's data occupies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    pub records: u64,
    /// Bytes of the records' data as stored.
    pub storage_bytes: u64,
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
    async fn collections(&self) -> StoreResult<Vec<CollectionDef>>;
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
    /// Count per value of `field` (missing → null), and the total.
    async fn group_counts(
        &self,
        collection: &str,
        field: &str,
    ) -> StoreResult<(u64, Vec<(Value, u64)>)>;
    async fn usage(&self) -> StoreResult<Usage>;

    /// Entries of the tenant's data chain after `after_seq` matching
    /// `filter`, in link order, with their seq.
    async fn list_audit(
        &self,
        filter: &AuditFilter,
        after_seq: i64,
        limit: u32,
    ) -> StoreResult<Vec<(i64, AuditEntry)>>;
}
