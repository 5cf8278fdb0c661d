-- Control store: platform users, plans, organizations, tenants and their config.
-- Ids are UUID text (v7, so text order is creation order); times are RFC 3339.

CREATE TABLE plans (
    code TEXT PRIMARY KEY,
    body TEXT NOT NULL CHECK (json_valid(body))
);

CREATE TABLE organizations (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT,
    created_at TEXT NOT NULL
);

CREATE TABLE platform_users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL,
    name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('super_admin', 'org_admin')),
    organization_id TEXT REFERENCES organizations (id),
    created_at TEXT NOT NULL
);
CREATE UNIQUE INDEX platform_users_email ON platform_users (lower(email));

CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    slug TEXT NOT NULL,
    name TEXT NOT NULL,
    plan TEXT NOT NULL REFERENCES plans (code),
    status TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'deleted')),
    isolation TEXT NOT NULL CHECK (isolation IN ('shared', 'dedicated')),
    organization_id TEXT REFERENCES organizations (id),
    domain TEXT,
    metadata TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),
    branding TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(branding)),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
-- A purged tenant frees its slug and domain for reuse.
CREATE UNIQUE INDEX tenants_slug ON tenants (slug) WHERE status <> 'deleted';
CREATE UNIQUE INDEX tenants_domain ON tenants (domain) WHERE status <> 'deleted' AND domain IS NOT NULL;
CREATE INDEX tenants_organization ON tenants (organization_id, id);

-- Each tenant's data-encryption key, wrapped (AES-256-GCM) by the master key.
CREATE TABLE tenant_keys (
    tenant_id TEXT PRIMARY KEY REFERENCES tenants (id),
    wrapped_key BLOB NOT NULL
);

CREATE TABLE tenant_config (
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    key TEXT NOT NULL,
    value TEXT NOT NULL CHECK (json_valid(value)),
    encrypted INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, key)
);
