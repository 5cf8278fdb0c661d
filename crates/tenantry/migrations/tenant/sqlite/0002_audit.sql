-- The tenant's `data` audit chain lives beside its records, so a record
-- change and its entry commit in one transaction (in a dedicated database
-- too). Append-only (triggers below); verify catches edits made around them.
CREATE TABLE audit_log (
    tenant_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    id TEXT NOT NULL,
    actor TEXT NOT NULL,
    actor_scope TEXT NOT NULL,
    action TEXT NOT NULL,
    resource TEXT NOT NULL,
    at TEXT NOT NULL,
    request_id TEXT,
    prev_hash TEXT,
    hash TEXT NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);

CREATE TRIGGER audit_log_append_only_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END;
CREATE TRIGGER audit_log_append_only_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END;
