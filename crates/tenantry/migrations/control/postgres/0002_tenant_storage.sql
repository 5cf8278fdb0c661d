-- Where each tenant's data lives and at which schema version.
-- schema_version: the tenant-data schema of a dedicated tenant's own
-- database, so `tenantry migrate` knows which ones are behind and resumes
-- where it stopped (shared-tier tenants live in one database migrated as a
-- whole). placement: the server (of `[[placement.servers]]`) holding the
-- tenant's data; NULL: the main database.
ALTER TABLE tenants ADD COLUMN schema_version bigint NOT NULL DEFAULT 0;
ALTER TABLE tenants ADD COLUMN placement text;
CREATE INDEX tenants_schema_version ON tenants (isolation, schema_version) WHERE status <> 'deleted';
CREATE INDEX tenants_placement ON tenants (placement) WHERE status <> 'deleted';
