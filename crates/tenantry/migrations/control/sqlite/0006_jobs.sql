-- Tenant mobility: deletion becomes a job (a tenant is `deleting` until the
-- sweeper has purged it), and the durable job queue.
--
-- SQLite cannot change a CHECK constraint in place: the tenants table is
-- rebuilt, inside the migration's transaction, with foreign keys deferred.
-- Dropping the old table counts every row that refers to a tenant as
-- orphaned; inserting the tenants into the new table counts them back, so
-- the transaction commits with no violation (and would refuse to if any
-- row were left pointing at nothing).
PRAGMA defer_foreign_keys = ON;
CREATE TEMP TABLE tenants_copy AS SELECT * FROM tenants;
DROP INDEX tenants_slug;
DROP INDEX tenants_domain;
DROP INDEX tenants_organization;
DROP INDEX tenants_schema_version;
DROP TABLE tenants;
CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    slug TEXT NOT NULL,
    name TEXT NOT NULL,
    plan TEXT NOT NULL REFERENCES plans (code),
    status TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'deleting', 'deleted')),
    isolation TEXT NOT NULL CHECK (isolation IN ('shared', 'dedicated')),
    organization_id TEXT REFERENCES organizations (id),
    domain TEXT,
    metadata TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),
    branding TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(branding)),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    schema_version INTEGER NOT NULL DEFAULT 0,
    placement TEXT
);
INSERT INTO tenants (id, slug, name, plan, status, isolation, organization_id, domain,
                     metadata, branding, created_at, updated_at, schema_version, placement)
SELECT id, slug, name, plan, status, isolation, organization_id, domain,
       metadata, branding, created_at, updated_at, schema_version, placement FROM tenants_copy;
DROP TABLE tenants_copy;
-- A deleting tenant frees its slug and domain at once.
CREATE UNIQUE INDEX tenants_slug ON tenants (slug) WHERE status IN ('active', 'suspended');
CREATE UNIQUE INDEX tenants_domain ON tenants (domain) WHERE status IN ('active', 'suspended') AND domain IS NOT NULL;
CREATE INDEX tenants_organization ON tenants (organization_id, id);
CREATE INDEX tenants_schema_version ON tenants (isolation, schema_version) WHERE status <> 'deleted';

-- The job queue. A job row is the platform's record of work on a tenant
-- (kind, progress, error text, a result path), not the tenant's data, and
-- workers claim across tenants: keyed by id, like refresh_tokens.
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    kind TEXT NOT NULL CHECK (kind IN ('export', 'import', 'move', 'delete')),
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    progress REAL NOT NULL DEFAULT 0,
    params TEXT NOT NULL DEFAULT 'null' CHECK (json_valid(params)),
    state TEXT NOT NULL DEFAULT 'null' CHECK (json_valid(state)),
    result_url TEXT,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    heartbeat_at TEXT,
    worker TEXT,
    node TEXT,
    run_after TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
-- One unfinished job per tenant: two jobs never work on one tenant's data at once.
CREATE UNIQUE INDEX jobs_unfinished ON jobs (tenant_id) WHERE status IN ('queued', 'running');
CREATE INDEX jobs_claim ON jobs (status, run_after);
CREATE INDEX jobs_tenant ON jobs (tenant_id, id);
