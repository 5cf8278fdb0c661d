-- Tenant mobility: deletion becomes a job (a tenant is `deleting` until the
-- sweeper has purged it), and the durable job queue.
ALTER TABLE tenants DROP CONSTRAINT tenants_status_check;
ALTER TABLE tenants ADD CONSTRAINT tenants_status_check
    CHECK (status IN ('active', 'suspended', 'deleting', 'deleted'));
-- A deleting tenant frees its slug and domain at once.
DROP INDEX tenants_slug;
DROP INDEX tenants_domain;
CREATE UNIQUE INDEX tenants_slug ON tenants (slug) WHERE status IN ('active', 'suspended');
CREATE UNIQUE INDEX tenants_domain ON tenants (domain) WHERE status IN ('active', 'suspended') AND domain IS NOT NULL;

-- The job queue. A job row is the platform's record of work on a tenant
-- (kind, progress, error text, a result path), not the tenant's data, and
-- workers claim across tenants (FOR UPDATE SKIP LOCKED): keyed by id and
-- without row-level security, like refresh_tokens.
CREATE TABLE jobs (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    kind text NOT NULL CHECK (kind IN ('export', 'import', 'move', 'delete')),
    status text NOT NULL CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    progress double precision NOT NULL DEFAULT 0,
    params jsonb NOT NULL DEFAULT 'null',
    state jsonb NOT NULL DEFAULT 'null',
    result_url text,
    error text,
    attempts integer NOT NULL DEFAULT 0,
    heartbeat_at timestamptz,
    worker text,
    node text,
    run_after timestamptz NOT NULL,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
-- One unfinished job per tenant: two jobs never work on one tenant's data at once.
CREATE UNIQUE INDEX jobs_unfinished ON jobs (tenant_id) WHERE status IN ('queued', 'running');
CREATE INDEX jobs_claim ON jobs (status, run_after);
CREATE INDEX jobs_tenant ON jobs (tenant_id, id);
