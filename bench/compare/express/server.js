// Express + pg: the subset of Tenantry's HTTP API that the load generator
// (crates/tenantry-server/examples/load.rs) uses, built the way a careful
// hand-built multi-tenant app would be, for bench/compare.sh (issue 17).
//
// Environment: PORT, DATABASE_URL (postgres://…/dbname), ADMIN_EMAIL,
// ADMIN_PASSWORD, JWT_SECRET. Schema: ../schema.sql.
//
// Every tenant lives in the shared tables; every tenant-scoped request
// verifies its JWT (signature and exp), reads the tenant row by the token's
// `tid` and refuses unless it is active, and scopes each query by tenant_id.
'use strict';

const cluster = require('node:cluster');
const crypto = require('node:crypto');
const { promisify } = require('node:util');

// The machine has 2 cores and Tenantry runs 2 runtime threads: 2 workers.
const WORKERS = 2;

if (cluster.isPrimary) {
  for (let i = 0; i < WORKERS; i++) cluster.fork();
  let stopping = false;
  cluster.on('exit', (worker, code, signal) => {
    if (!stopping) {
      console.error(`worker ${worker.process.pid} died (${signal || code})`);
      process.exitCode = 1;
    }
  });
  for (const sig of ['SIGTERM', 'SIGINT']) {
    process.on(sig, () => {
      stopping = true;
      for (const w of Object.values(cluster.workers)) w.process.kill('SIGTERM');
      setTimeout(() => process.exit(0), 2000).unref();
      // Exits as soon as every worker has.
      cluster.disconnect(() => process.exit(0));
    });
  }
  return;
}

const express = require('express');
const jwt = require('jsonwebtoken');
const { Pool } = require('pg');

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const PORT = Number(process.env.PORT || 3000);
const ADMIN_EMAIL = env('ADMIN_EMAIL');
const ADMIN_PASSWORD = env('ADMIN_PASSWORD');
// A KeyObject made once: given the string, jsonwebtoken 9 tries
// createPublicKey on it at every verify (and fails over to a secret key),
// which profiled at a quarter of a worker's CPU on GET-by-id.
const JWT_KEY = crypto.createSecretKey(Buffer.from(env('JWT_SECRET')));
const TOKEN_TTL = 900;

const pool = new Pool({ connectionString: env('DATABASE_URL'), max: 16 });
pool.on('error', (err) => console.error('idle client error', err.message));

// --- ids, passwords, tokens -------------------------------------------------

// uuid v7: 48 bits of Unix milliseconds, then randomUUID()'s random bits with
// the version nibble set to 7 (its variant bits are already RFC 4122's).
function uuidv7() {
  const ts = Date.now().toString(16).padStart(12, '0');
  return `${ts.slice(0, 8)}-${ts.slice(8, 12)}-7${crypto.randomUUID().slice(15)}`;
}
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const scrypt = promisify(crypto.scrypt);
const SCRYPT = { N: 16384, r: 8, p: 1 };
const KEYLEN = 32;

async function hashPassword(password) {
  const salt = crypto.randomBytes(16);
  const hash = await scrypt(password, salt, KEYLEN, SCRYPT);
  return `scrypt$${SCRYPT.N}$${SCRYPT.r}$${SCRYPT.p}$${salt.toString('base64')}$${hash.toString('base64')}`;
}

async function verifyPassword(password, stored) {
  const [scheme, N, r, p, salt, hash] = String(stored).split('$');
  if (scheme !== 'scrypt' || !hash) return false;
  const expected = Buffer.from(hash, 'base64');
  const actual = await scrypt(password, Buffer.from(salt, 'base64'), expected.length, {
    N: Number(N), r: Number(r), p: Number(p),
  });
  return crypto.timingSafeEqual(actual, expected);
}

function sameSecret(a, b) {
  const x = crypto.createHash('sha256').update(String(a)).digest();
  const y = crypto.createHash('sha256').update(String(b)).digest();
  return crypto.timingSafeEqual(x, y);
}

function issueToken(claims) {
  const exp = Math.floor(Date.now() / 1000) + TOKEN_TTL;
  return {
    access_token: jwt.sign({ ...claims, exp }, JWT_KEY, { algorithm: 'HS256' }),
    token_type: 'Bearer',
    expires_in: TOKEN_TTL,
  };
}

// --- errors -----------------------------------------------------------------

const TITLES = {
  400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found',
  405: 'Method Not Allowed', 409: 'Conflict', 413: 'Payload Too Large',
  422: 'Unprocessable Entity', 500: 'Internal Server Error', 503: 'Service Unavailable',
};

class Problem extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

function sendProblem(res, status, detail) {
  res.status(status).type('application/problem+json').send(JSON.stringify({
    type: 'about:blank', title: TITLES[status] || 'Error', status, detail,
  }));
}

// --- authentication and the tenant gate --------------------------------------

function claimsOf(req) {
  const header = req.get('authorization') || '';
  const m = /^Bearer\s+(.+)$/i.exec(header);
  if (!m) throw new Problem(401, 'missing bearer token');
  try {
    // Checks the signature and exp.
    return jwt.verify(m[1], JWT_KEY, { algorithms: ['HS256'] });
  } catch {
    throw new Problem(401, 'invalid or expired token');
  }
}

function platform(req, res, next) {
  const claims = claimsOf(req);
  if (claims.role !== 'platform') throw new Problem(403, 'platform staff only');
  req.claims = claims;
  next();
}

// Design choice: the tenant row is read on every request (one SELECT by
// primary key), with no cache, so a suspended tenant is refused at once.
async function tenantScoped(req, res, next) {
  const claims = claimsOf(req);
  if (typeof claims.tid !== 'string' || !UUID_RE.test(claims.tid)) {
    throw new Problem(403, 'a tenant token is required');
  }
  const { rows } = await pool.query('SELECT id, status FROM tenants WHERE id = $1', [claims.tid]);
  if (rows.length === 0) throw new Problem(401, 'the token names no tenant');
  if (rows[0].status !== 'active') throw new Problem(403, `tenant is ${rows[0].status}`);
  req.claims = claims;
  req.tenantId = rows[0].id;
  next();
}

function objectBody(req) {
  const b = req.body;
  if (b === null || typeof b !== 'object' || Array.isArray(b)) {
    throw new Problem(422, 'the body must be a JSON object');
  }
  return b;
}

const isUniqueViolation = (err) => err && err.code === '23505';

// --- JSON shapes ---------------------------------------------------------------

const tenantJson = (t) => ({
  id: t.id, slug: t.slug, name: t.name, plan: t.plan, isolation: t.isolation,
  status: t.status, created_at: t.created_at,
});
const userJson = (u) => ({
  id: u.id, tenant_id: u.tenant_id, email: u.email, name: u.name, role: u.role,
  created_at: u.created_at,
});
const recordJson = (r) => ({
  id: r.id, collection: r.collection, data: r.data, version: r.version,
  created_at: r.created_at, updated_at: r.updated_at,
});
const RECORD_COLUMNS = 'id, collection, data, version, created_at, updated_at';

// --- routes ----------------------------------------------------------------------

const app = express();
app.use(express.json());

app.get('/healthz', (req, res) => res.json({ status: 'ok' }));

app.get('/readyz', async (req, res) => {
  try {
    await pool.query('SELECT 1');
    res.json({ status: 'ok' });
  } catch (err) {
    sendProblem(res, 503, 'database unavailable');
  }
});

app.post('/api/v1/auth/login', async (req, res) => {
  const { email, password, tenant } = objectBody(req);
  if (tenant === undefined || tenant === null) {
    if (!sameSecret(email, ADMIN_EMAIL) || !sameSecret(password, ADMIN_PASSWORD)) {
      throw new Problem(401, 'wrong email or password');
    }
    return res.json(issueToken({ sub: 'platform-admin', role: 'platform' }));
  }
  const t = await pool.query('SELECT id FROM tenants WHERE slug = $1', [String(tenant)]);
  if (t.rows.length === 0) throw new Problem(401, 'wrong email or password');
  const tid = t.rows[0].id;
  const u = await pool.query(
    'SELECT id, role, password_hash FROM users WHERE tenant_id = $1 AND email = $2',
    [tid, String(email)],
  );
  if (u.rows.length === 0 || !(await verifyPassword(String(password), u.rows[0].password_hash))) {
    throw new Problem(401, 'wrong email or password');
  }
  res.json(issueToken({ sub: u.rows[0].id, tid, role: u.rows[0].role }));
});

app.post('/api/v1/tenants', platform, async (req, res) => {
  const { name, slug, plan, isolation } = objectBody(req);
  try {
    const { rows } = await pool.query(
      `INSERT INTO tenants (id, slug, name, plan, isolation, status)
       VALUES ($1, $2, $3, $4, $5, 'active')
       RETURNING id, slug, name, plan, isolation, status, created_at`,
      [uuidv7(), slug, name, plan, isolation ?? 'shared'],
    );
    res.status(201).json(tenantJson(rows[0]));
  } catch (err) {
    if (isUniqueViolation(err)) throw new Problem(409, `slug ${slug} is taken`);
    throw err;
  }
});

app.post('/api/v1/users', platform, async (req, res) => {
  const { email, password, name, role } = objectBody(req);
  const slug = req.get('x-tenant-slug');
  if (!slug) throw new Problem(400, 'x-tenant-slug is required');
  const t = await pool.query('SELECT id FROM tenants WHERE slug = $1', [slug]);
  if (t.rows.length === 0) throw new Problem(404, `no tenant ${slug}`);
  const passwordHash = await hashPassword(String(password));
  try {
    const { rows } = await pool.query(
      `INSERT INTO users (tenant_id, id, email, name, role, password_hash)
       VALUES ($1, $2, $3, $4, $5, $6)
       RETURNING tenant_id, id, email, name, role, created_at`,
      [t.rows[0].id, uuidv7(), email, name, role, passwordHash],
    );
    res.status(201).json(userJson(rows[0]));
  } catch (err) {
    if (isUniqueViolation(err)) throw new Problem(409, `${email} already exists`);
    throw err;
  }
});

app.post('/api/v1/collections/:collection/records', tenantScoped, async (req, res) => {
  const data = objectBody(req);
  const { rows } = await pool.query(
    `INSERT INTO records (tenant_id, collection, id, data, version)
     VALUES ($1, $2, $3, $4, 1)
     RETURNING ${RECORD_COLUMNS}`,
    [req.tenantId, req.params.collection, uuidv7(), data],
  );
  res.status(201).json(recordJson(rows[0]));
});

app.get('/api/v1/collections/:collection/records/:id', tenantScoped, async (req, res) => {
  // A malformed id names no record: 404, as an absent one.
  if (!UUID_RE.test(req.params.id)) throw new Problem(404, 'no such record');
  const { rows } = await pool.query(
    `SELECT ${RECORD_COLUMNS} FROM records
     WHERE tenant_id = $1 AND collection = $2 AND id = $3`,
    [req.tenantId, req.params.collection, req.params.id],
  );
  if (rows.length === 0) throw new Problem(404, 'no such record');
  res.json(recordJson(rows[0]));
});

app.get('/api/v1/collections/:collection/records', tenantScoped, async (req, res) => {
  let limit = Number.parseInt(req.query.limit, 10);
  limit = Number.isNaN(limit) ? 20 : Math.min(Math.max(limit, 1), 100);
  const cursor = req.query.cursor || null;
  if (cursor !== null && !(typeof cursor === 'string' && UUID_RE.test(cursor))) {
    throw new Problem(422, 'cursor: not a record id');
  }
  // One row more than asked tells whether a next page exists.
  const { rows } = await pool.query(
    `SELECT ${RECORD_COLUMNS} FROM records
     WHERE tenant_id = $1 AND collection = $2 AND ($3::uuid IS NULL OR id < $3::uuid)
     ORDER BY id DESC LIMIT $4`,
    [req.tenantId, req.params.collection, cursor, limit + 1],
  );
  const items = rows.slice(0, limit).map(recordJson);
  const nextCursor = rows.length > limit ? items[items.length - 1].id : null;
  res.json({ items, next_cursor: nextCursor });
});

app.use((req, res) => sendProblem(res, 404, `no route for ${req.method} ${req.path}`));

// Express 5 routes rejected promises here too.
app.use((err, req, res, next) => {
  if (res.headersSent) return next(err);
  if (err instanceof Problem) return sendProblem(res, err.status, err.message);
  if (err.type === 'entity.parse.failed') return sendProblem(res, 400, 'the body is not valid JSON');
  if (err.type === 'entity.too.large') return sendProblem(res, 413, 'the body is too large');
  // A missing required field reaches the database as NULL.
  if (err.code === '23502') return sendProblem(res, 422, `${err.column} is required`);
  console.error(err);
  sendProblem(res, 500, 'internal error');
});

app.listen(PORT, '127.0.0.1');
