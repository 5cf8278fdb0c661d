-- Control store on PostgreSQL: platform users, plans, organizations,
-- tenants, their config and identity. Runs as the migration role.
--
-- Every table holding one tenant's rows leads its primary key with
-- tenant_id and has row-level security, enabled and forced, with one
-- policy: the row's tenant must equal `tenantry.tenant_id`, which the server
-- sets with set_config(..., true) (= SET LOCAL) inside each transaction.
-- Unset or empty, the setting matches nothing: RLS fails closed.
-- The one exception is refresh_tokens: a session credential looked up by
-- the hash of a 256-bit secret before any tenant is known; it holds no
-- tenant data.

CREATE TABLE plans (
    code text PRIMARY KEY,
    body jsonb NOT NULL
);

CREATE TABLE organizations (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    description text,
    created_at timestamptz NOT NULL
);

CREATE TABLE platform_users (
    id uuid PRIMARY KEY,
    email text NOT NULL,
    name text NOT NULL,
    password_hash text NOT NULL,
    role text NOT NULL CHECK (role IN ('super_admin', 'org_admin')),
    organization_id uuid REFERENCES organizations (id),
    created_at timestamptz NOT NULL
);
CREATE UNIQUE INDEX platform_users_email ON platform_users (lower(email));

CREATE TABLE tenants (
    id uuid PRIMARY KEY,
    slug text NOT NULL,
    name text NOT NULL,
    plan text NOT NULL REFERENCES plans (code),
    status text NOT NULL CHECK (status IN ('active', 'suspended', 'deleted')),
    isolation text NOT NULL CHECK (isolation IN ('shared', 'dedicated')),
    organization_id uuid REFERENCES organizations (id),
    domain text,
    metadata jsonb NOT NULL DEFAULT '{}',
    branding jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
-- A purged tenant frees its slug and domain for reuse.
CREATE UNIQUE INDEX tenants_slug ON tenants (slug) WHERE status <> 'deleted';
CREATE UNIQUE INDEX tenants_domain ON tenants (domain) WHERE status <> 'deleted' AND domain IS NOT NULL;
CREATE INDEX tenants_organization ON tenants (organization_id, id);

-- Each tenant's data-encryption key, wrapped (AES-256-GCM) by the master key.
CREATE TABLE tenant_keys (
    tenant_id uuid PRIMARY KEY REFERENCES tenants (id),
    wrapped_key bytea NOT NULL
);

CREATE TABLE tenant_config (
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    key text NOT NULL,
    value jsonb NOT NULL,
    encrypted boolean NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, key)
);

CREATE TABLE users (
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    id uuid NOT NULL,
    email text,
    name text NOT NULL,
    role text NOT NULL CHECK (role IN ('admin', 'manager', 'user')),
    phone text,
    password_hash text,
    active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
-- Unique per tenant (case-insensitive email); the same email may exist in two tenants.
CREATE UNIQUE INDEX users_email ON users (tenant_id, lower(email)) WHERE email IS NOT NULL;
CREATE UNIQUE INDEX users_phone ON users (tenant_id, phone) WHERE phone IS NOT NULL;

CREATE TABLE refresh_tokens (
    token_hash text PRIMARY KEY,
    family_id uuid NOT NULL,
    tenant_id uuid REFERENCES tenants (id),
    user_id uuid NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at timestamptz,
    revoked_at timestamptz
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (tenant_id, user_id);

CREATE TABLE otp_codes (
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    phone text NOT NULL,
    code_hash text NOT NULL,
    expires_at timestamptz NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, phone)
);

-- Append-only: the runtime role is granted SELECT and INSERT only.
CREATE TABLE audit_log (
    tenant_id uuid NOT NULL REFERENCES tenants (id),
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

-- Requests per tenant per UTC day, written in batches.
CREATE TABLE request_counts (
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    day date NOT NULL,
    requests bigint NOT NULL,
    PRIMARY KEY (tenant_id, day)
);

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['tenant_keys', 'tenant_config', 'users', 'otp_codes', 'audit_log', 'request_counts'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I USING (tenant_id = NULLIF(current_setting(''tenantry.tenant_id'', true), '''')::uuid) '
            'WITH CHECK (tenant_id = NULLIF(current_setting(''tenantry.tenant_id'', true), '''')::uuid)', t);
    END LOOP;
END $$;
