-- Tenant users, refresh tokens, OTP codes and the per-tenant audit chain.
-- Tenant-held rows lead their primary key with tenant_id.

CREATE TABLE users (
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    id TEXT NOT NULL,
    email TEXT,
    name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'manager', 'user')),
    phone TEXT,
    password_hash TEXT,
    active INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
-- Email is unique per tenant, case-insensitively; the same email may exist in two tenants.
CREATE UNIQUE INDEX users_email ON users (tenant_id, lower(email)) WHERE email IS NOT NULL;
CREATE UNIQUE INDEX users_phone ON users (tenant_id, phone) WHERE phone IS NOT NULL;

CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    family_id TEXT NOT NULL,
    tenant_id TEXT REFERENCES tenants (id),
    user_id TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at TEXT,
    revoked_at TEXT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (tenant_id, user_id);

CREATE TABLE otp_codes (
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    phone TEXT NOT NULL,
    code_hash TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, phone)
);

-- Append-only: no code path updates or deletes these rows.
CREATE TABLE audit_log (
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
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
