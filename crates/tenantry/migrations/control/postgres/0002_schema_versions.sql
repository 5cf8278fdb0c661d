-- The tenant-data schema version of each dedicated tenant's own database,
-- so `tenantry migrate` knows which ones are behind and resumes where it
-- stopped. Shared-tier tenants live in one database migrated as a whole.
ALTER TABLE tenants ADD COLUMN schema_version bigint NOT NULL DEFAULT 0;
CREATE INDEX tenants_schema_version ON tenants (isolation, schema_version) WHERE status <> 'deleted';
