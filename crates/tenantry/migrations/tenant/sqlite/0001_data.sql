-- Tenant data: collections of JSON records. The same schema serves the
-- shared tier (one database, every tenant) and the dedicated tier (one
-- database per tenant); every key leads with tenant_id either way.

CREATE TABLE collections (
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    schema TEXT CHECK (schema IS NULL OR json_valid(schema)),
    unique_fields TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(unique_fields)),
    indexed_fields TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(indexed_fields)),
    required_feature TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE records (
    tenant_id TEXT NOT NULL,
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    data TEXT NOT NULL CHECK (json_valid(data)),
    version INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    created_by TEXT,
    PRIMARY KEY (tenant_id, collection, id)
);
CREATE INDEX records_created ON records (tenant_id, collection, created_at, id);
CREATE INDEX records_updated ON records (tenant_id, collection, updated_at, id);

-- One row per (unique field, value): the primary key enforces uniqueness within a tenant.
CREATE TABLE record_uniques (
    tenant_id TEXT NOT NULL,
    collection TEXT NOT NULL,
    field TEXT NOT NULL,
    value TEXT NOT NULL,
    record_id TEXT NOT NULL,
    PRIMARY KEY (tenant_id, collection, field, value)
);
CREATE INDEX record_uniques_record ON record_uniques (tenant_id, collection, record_id);

-- Kept current in the same transaction as every write.
CREATE TABLE usage (
    tenant_id TEXT PRIMARY KEY,
    records INTEGER NOT NULL DEFAULT 0,
    storage_bytes INTEGER NOT NULL DEFAULT 0
);
