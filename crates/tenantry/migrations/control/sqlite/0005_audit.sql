-- Events that concern no tenant (plans, organizations, platform users,
-- platform logins) form their own chain. tenant_id is always NULL: the
-- column keeps the layout of audit_log so one code path serves both.
CREATE TABLE platform_audit (
    tenant_id TEXT CHECK (tenant_id IS NULL),
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    actor TEXT NOT NULL,
    actor_scope TEXT NOT NULL,
    action TEXT NOT NULL,
    resource TEXT NOT NULL,
    at TEXT NOT NULL,
    request_id TEXT,
    prev_hash TEXT,
    hash TEXT NOT NULL
);

-- Append-only, as the runtime role's privileges make it on PostgreSQL: the
-- application never updates or deletes an entry, so nothing it runs can.
CREATE TRIGGER audit_log_append_only_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END;
CREATE TRIGGER audit_log_append_only_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END;
CREATE TRIGGER platform_audit_append_only_update BEFORE UPDATE ON platform_audit
BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END;
CREATE TRIGGER platform_audit_append_only_delete BEFORE DELETE ON platform_audit
BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END;
