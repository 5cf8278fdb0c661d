-- Events that concern no tenant (plans, organizations, platform users,
-- platform logins) form their own chain. tenant_id is always NULL: the
-- column keeps the layout of audit_log so one code path serves both. No
-- tenant's rows are here, so no row-level security; the runtime role may
-- only insert and read (see grant_runtime).
CREATE TABLE platform_audit (
    tenant_id uuid CHECK (tenant_id IS NULL),
    seq bigint PRIMARY KEY,
    id uuid NOT NULL UNIQUE,
    actor text NOT NULL,
    actor_scope text NOT NULL,
    action text NOT NULL,
    resource text NOT NULL,
    at timestamptz NOT NULL,
    request_id text,
    prev_hash text,
    hash text NOT NULL
);
