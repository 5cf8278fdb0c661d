-- A tenant's usage row is the mark that its data lives in this database:
-- created when the tenant is provisioned here, removed when its data is
-- purged or moved away, so a write that arrives late (from a request that
-- resolved the tenant before it moved or was deleted) finds no row and is
-- refused instead of recreating rows. `sealed`: writes are refused while a
-- move, an import or a deletion holds the copy.
ALTER TABLE usage ADD COLUMN sealed INTEGER NOT NULL DEFAULT 0;
-- Tenants that wrote before the mark existed: every write defines a collection first.
INSERT INTO usage (tenant_id) SELECT DISTINCT tenant_id FROM collections WHERE true
ON CONFLICT (tenant_id) DO NOTHING;
