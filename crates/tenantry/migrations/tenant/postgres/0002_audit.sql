-- The tenant's `data` audit chain lives beside its records, so a record
-- change and its entry commit in one transaction (in a dedicated database
-- too). The runtime role may only insert and read (see grant_runtime).
CREATE TABLE audit_log (
    tenant_id uuid NOT NULL,
    seq bigint NOT NULL,
    id uuid NOT NULL,
    actor text NOT NULL,
    actor_scope text NOT NULL,
    action text NOT NULL,
    resource text NOT NULL,
    at timestamptz NOT NULL,
    request_id text,
    prev_hash text,
    hash text NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);

ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_log FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_log
    USING (tenant_id = NULLIF(current_setting('tenantry.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('tenantry.tenant_id', true), '')::uuid);
