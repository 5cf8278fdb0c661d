-- Schema of the two hand-built comparison apps (bench/compare/express and
-- bench/compare/fastapi). bench/compare.sh loads it into a fresh database
-- before starting either. Every tenant lives in these shared tables
-- (`isolation` is stored, not acted on); every query is scoped by tenant_id.
CREATE TABLE tenants (
  id uuid PRIMARY KEY,
  slug text NOT NULL UNIQUE,
  name text NOT NULL,
  plan text NOT NULL,
  isolation text NOT NULL DEFAULT 'shared',
  status text NOT NULL DEFAULT 'active',
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
  tenant_id uuid NOT NULL REFERENCES tenants (id),
  id uuid NOT NULL,
  email text NOT NULL,
  name text NOT NULL,
  role text NOT NULL,
  password_hash text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, id),
  UNIQUE (tenant_id, email)
);

-- Ids are time-ordered (uuid v7, made by the app), so the primary key also
-- serves "newest first" lists of one tenant's collection.
CREATE TABLE records (
  tenant_id uuid NOT NULL,
  collection text NOT NULL,
  id uuid NOT NULL,
  data jsonb NOT NULL,
  version integer NOT NULL DEFAULT 1,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, collection, id)
);
