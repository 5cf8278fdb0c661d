-- Tenant data on PostgreSQL: collections of JSON records. Runs in schema
-- tenant_data, both in the main database (shared tier, every tenant) and
-- in each dedicated tenant database (cloned from a migrated template).
-- Every key leads with tenant_id (Citus distributes these tables on it), and
-- row-level security is enabled and forced on every table, in both tiers.

CREATE TABLE collections (
    tenant_id uuid NOT NULL,
    name text NOT NULL,
    schema jsonb,
    unique_fields jsonb NOT NULL DEFAULT '[]',
    indexed_fields jsonb NOT NULL DEFAULT '[]',
    required_feature text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE records (
    tenant_id uuid NOT NULL,
    collection text NOT NULL,
    id uuid NOT NULL,
    data jsonb NOT NULL,
    -- Bytes of `data` as the API serialized it: the unit of the storage quota.
    size bigint NOT NULL,
    version bigint NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    created_by uuid,
    PRIMARY KEY (tenant_id, collection, id)
);
CREATE INDEX records_created ON records (tenant_id, collection, created_at, id);
CREATE INDEX records_updated ON records (tenant_id, collection, updated_at, id);

-- One row per (unique field, value): the primary key enforces uniqueness within a tenant.
CREATE TABLE record_uniques (
    tenant_id uuid NOT NULL,
    collection text NOT NULL,
    field text NOT NULL,
    value text NOT NULL,
    record_id uuid NOT NULL,
    PRIMARY KEY (tenant_id, collection, field, value)
);
CREATE INDEX record_uniques_record ON record_uniques (tenant_id, collection, record_id);

-- Kept current in the same transaction as every write.
CREATE TABLE usage (
    tenant_id uuid PRIMARY KEY,
    records bigint NOT NULL DEFAULT 0,
    storage_bytes bigint NOT NULL DEFAULT 0
);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['collections', 'records', 'record_uniques', 'usage'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I USING (tenant_id = NULLIF(current_setting(''tenantry.tenant_id'', true), '''')::uuid) '
            'WITH CHECK (tenant_id = NULLIF(current_setting(''tenantry.tenant_id'', true), '''')::uuid)', t);
    END LOOP;
END $$;
