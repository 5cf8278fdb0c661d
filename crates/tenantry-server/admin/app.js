// The Tenantry console: a client of the public HTTP API and nothing else.
// The access token lives in this module's memory only (never in storage or
// a URL): a reload signs the operator out. Pages are drawn with `h`, which
// sets text, never HTML, so tenant-supplied names cannot inject markup.

const session = { token: null, user: null, tenant: null };

/** An API failure: the problem+json document's title, detail and field errors. */
class Problem extends Error {
  constructor(status, body) {
    super(body.detail || body.title || `HTTP ${status}`);
    this.status = status;
    this.title = body.title || `HTTP ${status}`;
    this.detail = body.detail || "";
    this.errors = Array.isArray(body.errors) ? body.errors : [];
  }
}

async function api(method, path, body, extra = {}) {
  return request(method, path, { body: body === undefined ? undefined : JSON.stringify(body), type: "application/json", headers: extra });
}

/** One API call; a failure becomes a `Problem`, a 401 signs the operator out. */
async function request(method, path, { body, type, headers: extra = {}, raw = false } = {}) {
  const headers = { Accept: "application/json", ...extra };
  if (session.token) headers.Authorization = `Bearer ${session.token}`;
  if (body !== undefined) headers["Content-Type"] = type;
  let res;
  try {
    res = await fetch(path, { method, headers, body });
  } catch (e) {
    throw new Problem(0, { title: "The server cannot be reached", detail: String(e) });
  }
  if (res.ok && raw) return res.blob();
  if (res.status === 204) return null;
  const text = await res.text();
  let parsed = null;
  try { parsed = text ? JSON.parse(text) : null; } catch { parsed = null; }
  if (!res.ok) {
    if (res.status === 401 && session.token) signOut();
    throw new Problem(res.status, parsed && typeof parsed === "object" ? parsed : { title: `HTTP ${res.status}`, detail: text.slice(0, 200) });
  }
  return parsed;
}

/** Builds an element: attributes (`on*` become listeners), then children (strings become text). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const svg = (tag, attrs = {}, ...children) => {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children.flat()) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
};

function showError(e) {
  const box = document.getElementById("alert");
  box.replaceChildren(h("strong", {}, e.title || "Something went wrong"), e.detail || String(e.message || ""));
  box.hidden = false;
}

function clearError() {
  const box = document.getElementById("alert");
  box.hidden = true;
  box.replaceChildren();
}

/** Runs an action; its failure is shown as the API's title and detail. */
async function attempt(action) {
  clearError();
  try { return await action(); } catch (e) { showError(e); return undefined; }
}

/**
 * A form whose submit runs `action` (see `attempt`); a refusal's field
 * errors are put next to their inputs as well.
 */
function onSubmit(form, action) {
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    showFieldErrors(form, { errors: [] });
    attempt(async () => {
      try { await action(); } catch (e) { showFieldErrors(form, e); throw e; }
    });
  });
}

/** Puts field errors from a 422 next to their inputs (`data-field`). */
function showFieldErrors(form, problem) {
  form.querySelectorAll(".field-error").forEach((el) => { el.textContent = ""; });
  for (const { field, message } of problem.errors || []) {
    const slot = form.querySelector(`.field-error[data-field="${CSS.escape(field)}"]`);
    if (slot) slot.textContent = message;
  }
}

function field(label, input, name) {
  const id = `f-${name}-${Math.random().toString(36).slice(2, 8)}`;
  input.id = id;
  if (!input.name) input.name = name;
  return h("div", {},
    h("label", { for: id }, label, input),
    h("div", { class: "field-error", "data-field": name, id: `${id}-error`, "aria-live": "polite" }));
}

const isPlatform = () => session.user && !session.user.tenant_id;
const isSuper = () => session.user && session.user.role === "super_admin";

function signOut() {
  session.token = null; session.user = null; session.tenant = null;
  location.hash = "#/login";
  render();
}

function drawChrome() {
  const nav = document.getElementById("nav");
  const who = document.getElementById("who");
  if (!session.token) { nav.replaceChildren(); who.replaceChildren(); return; }
  const links = !isPlatform()
    ? [h("a", { href: "#/tenant" }, "My tenant")]
    : [h("a", { href: "#/tenants" }, "Tenants"),
      isSuper() && h("a", { href: "#/plans" }, "Plans"),
      h("a", { href: "#/organizations" }, "Organizations"),
      h("a", { href: "#/analytics" }, "Analytics"),
      isSuper() && h("a", { href: "#/platform-audit" }, "Platform audit")].filter(Boolean);
  nav.replaceChildren(...links);
  const where = session.tenant ? ` · ${session.tenant.slug}` : "";
  who.replaceChildren(`${session.user.email || session.user.name} (${session.user.role})${where} `,
    h("button", { class: "secondary", type: "button", onclick: signOut }, "Sign out"));
}

// ---- pages ---------------------------------------------------------------

function loginPage() {
  const email = h("input", { type: "email", autocomplete: "username", required: true });
  const password = h("input", { type: "password", autocomplete: "current-password", required: true });
  const tenant = h("input", { type: "text", placeholder: "blank for platform staff", autocomplete: "organization" });
  const form = h("form", { class: "inline", "aria-label": "Sign in" },
    field("Email", email, "email"), field("Password", password, "password"),
    field("Tenant (slug)", tenant, "tenant"),
    h("button", { type: "submit" }, "Sign in"));
  onSubmit(form, async () => {
    const body = { email: email.value, password: password.value };
    if (tenant.value.trim()) body.tenant = tenant.value.trim();
    const out = await api("POST", "/api/v1/auth/login", body);
    session.token = out.access_token;
    session.user = out.user;
    session.tenant = out.tenant || null;
    location.hash = isPlatform() ? "#/tenants" : "#/tenant";
    render();
  });
  return [h("h1", {}, "Sign in"), h("section", {}, form)];
}

const PLANS = ["basic", "premium", "enterprise", "custom"];

async function planCodes() {
  try {
    const plans = await api("GET", "/api/v1/plans");
    return plans.items.map((p) => p.code);
  } catch { return PLANS; }
}

async function tenantsPage(params) {
  const q = h("input", { type: "search", value: params.get("q") || "" });
  const status = h("select", {}, ["", "active", "suspended", "deleted"].map((s) =>
    h("option", { value: s, selected: s === (params.get("status") || "") }, s || "any")));
  const codes = await planCodes();
  const plan = h("select", {}, ["", ...codes].map((p) =>
    h("option", { value: p, selected: p === (params.get("plan") || "") }, p || "any")));
  const org = h("input", { type: "text", value: params.get("organization_id") || "", placeholder: "organization id" });
  const filters = h("form", { class: "filters", role: "search", "aria-label": "Filter tenants" },
    field("Search", q, "q"), field("Status", status, "status"), field("Plan", plan, "plan"),
    field("Organization", org, "organization_id"), h("button", { type: "submit" }, "Filter"));
  filters.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const next = new URLSearchParams();
    if (q.value) next.set("q", q.value);
    if (status.value) next.set("status", status.value);
    if (plan.value) next.set("plan", plan.value);
    if (org.value) next.set("organization_id", org.value);
    location.hash = `#/tenants?${next}`;
  });

  const query = new URLSearchParams(params);
  query.set("limit", "20");
  const page = await api("GET", `/api/v1/tenants?${query}`);
  const rows = page.items.map((t) => h("tr", {},
    h("td", {}, h("a", { href: `#/tenants/${encodeURIComponent(t.slug)}` }, t.slug)),
    h("td", {}, t.name), h("td", {}, t.plan),
    h("td", { class: `status-${t.status}` }, t.status), h("td", {}, t.isolation)));
  const pager = h("div", { class: "actions" });
  if (params.get("cursor")) pager.append(h("a", { href: "#/tenants" }, "First page"));
  if (page.next_cursor) {
    const next = new URLSearchParams(params);
    next.set("cursor", page.next_cursor);
    pager.append(h("a", { href: `#/tenants?${next}` }, "Next page"));
  }
  const table = h("div", { class: "table-wrap" }, h("table", { "aria-label": "Tenants" },
    h("thead", {}, h("tr", {}, ["Slug", "Name", "Plan", "Status", "Isolation"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No tenants match.")))));

  return [h("h1", {}, "Tenants"), h("section", {}, filters), h("section", {}, table, pager),
    h("section", {}, h("h2", {}, "Create a tenant"), createTenantForm(codes))];
}

function createTenantForm(codes) {
  const name = h("input", { type: "text", required: true });
  const slug = h("input", { type: "text", required: true, pattern: "[a-z0-9-]{3,63}", title: "3–63 lower-case letters, digits and hyphens" });
  const plan = h("select", {}, codes.map((p) => h("option", { value: p }, p)));
  const isolation = h("select", {}, ["", "shared", "dedicated"].map((i) => h("option", { value: i }, i || "plan default")));
  const form = h("form", { class: "inline", "aria-label": "Create a tenant", novalidate: true },
    field("Name", name, "name"), field("Slug", slug, "slug"), field("Plan", plan, "plan"),
    field("Isolation", isolation, "isolation"), h("button", { type: "submit" }, "Create"));
  onSubmit(form, async () => {
    const body = { name: name.value, slug: slug.value, plan: plan.value };
    if (isolation.value) body.isolation = isolation.value;
    const t = await api("POST", "/api/v1/tenants", body);
    location.hash = `#/tenants/${encodeURIComponent(t.slug)}`;
  });
  return form;
}

/** Requests per day as an SVG bar chart, with the numbers as its text alternative. */
function requestsChart(days) {
  const width = 720, height = 200, pad = 28;
  const max = Math.max(1, ...days.map((d) => d.requests));
  const step = (width - pad) / Math.max(1, days.length);
  const bars = days.map((d, i) => {
    const bh = Math.round((height - pad) * d.requests / max);
    return svg("rect", { class: "bar-rect", x: pad + i * step + 1, y: height - pad - bh, width: Math.max(1, step - 2), height: bh },
      svg("title", {}, `${d.date}: ${d.requests} requests`));
  });
  const label = days.length ? `${days[0].date} to ${days[days.length - 1].date}` : "no days";
  return svg("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": `Requests per day, ${label}, at most ${max}` },
  svg("text", { x: 0, y: 12 }, String(max)), svg("text", { x: 0, y: height - pad }, "0"),
  svg("text", { x: pad, y: height - 8 }, days.length ? days[0].date : ""),
  svg("text", { x: width - 80, y: height - 8 }, days.length ? days[days.length - 1].date : ""),
  ...bars);
}

/** Use against its limit, one bar per quota (an SVG chart); the numbers are its text. */
function quotaChart(quotas) {
  const width = 720, row = 30, labelW = 170, barW = width - labelW - 150;
  const bars = quotas.map(([label, used, limit], i) => {
    const share = limit ? Math.min(1, used / limit) : 0;
    const y = i * row;
    const text = limit == null ? `${used} (no limit)` : `${used} of ${limit}`;
    return [svg("text", { x: 0, y: y + 19 }, label),
      svg("rect", { class: "quota-track", x: labelW, y: y + 6, width: barW, height: row - 12 }),
      svg("rect", { class: "bar-rect", x: labelW, y: y + 6, width: Math.max(1, Math.round(barW * share)), height: row - 12 },
        svg("title", {}, `${label}: ${text}`)),
      svg("text", { x: labelW + barW + 8, y: y + 19 }, text)];
  });
  const summary = quotas.map(([label, used, limit]) => `${label} ${used}${limit == null ? "" : ` of ${limit}`}`).join(", ");
  return svg("svg", { class: "chart quota-chart", viewBox: `0 0 ${width} ${quotas.length * row}`, role: "img", "aria-label": `Usage against the plan: ${summary}` }, ...bars.flat());
}

async function tenantPage(key) {
  const t = await api("GET", `/api/v1/tenants/${encodeURIComponent(key)}`);
  const id = encodeURIComponent(t.id);
  const out = [h("h1", {}, `${t.name} `, h("span", { class: "muted" }, t.slug))];

  const codes = await planCodes();
  const plan = h("select", { "aria-label": "New plan" }, codes.map((p) => h("option", { value: p, selected: p === t.plan }, p)));
  const actions = h("div", { class: "actions" },
    t.status === "active"
      ? h("button", { type: "button", onclick: () => attempt(async () => { await api("POST", `/api/v1/tenants/${id}/suspend`); render(); }) }, "Suspend")
      : h("button", { type: "button", onclick: () => attempt(async () => { await api("POST", `/api/v1/tenants/${id}/activate`); render(); }) }, "Activate"),
    plan,
    h("button", { type: "button", class: "secondary", onclick: () => attempt(async () => {
      const res = await api("POST", `/api/v1/tenants/${id}/plan`, { plan: plan.value });
      if (res.job_id) await followJob(res.job_id);
      render();
    }) }, "Change plan"),
    h("button", { type: "button", class: "danger", onclick: () => attempt(async () => {
      const typed = window.prompt(`Delete tenant "${t.slug}" and purge its data? Type its slug to confirm.`);
      if (typed !== t.slug) return;
      await api("DELETE", `/api/v1/tenants/${id}`);
      location.hash = "#/tenants";
    }) }, "Delete…"));
  out.push(h("section", {}, h("dl", { class: "facts" },
    h("dt", {}, "Status"), h("dd", { class: `status-${t.status}`, "data-testid": "tenant-status" }, t.status),
    h("dt", {}, "Plan"), h("dd", { "data-testid": "tenant-plan" }, t.plan),
    h("dt", {}, "Isolation"), h("dd", { "data-testid": "tenant-isolation" }, t.isolation),
    h("dt", {}, "Organization"), h("dd", {}, t.organization_id || "none"),
    h("dt", {}, "Created"), h("dd", {}, t.created_at)), h("h2", {}, "Actions"), actions,
  h("div", { id: "job", "aria-live": "polite" }), mobility(t)));

  const usage = await api("GET", `/api/v1/tenants/${id}/usage?range=30d`);
  out.push(h("section", { "aria-label": "Usage" }, h("h2", {}, "Usage"),
    quotaChart([["Users", usage.users, usage.limits.max_users],
      ["Storage (bytes)", usage.storage_bytes, usage.limits.max_storage_bytes],
      ["Requests today", usage.requests_today, usage.limits.api_requests_per_day]]),
    h("p", {}, `Records: ${usage.records}`),
    h("h2", {}, "Requests per day"), requestsChart(usage.requests_by_day)));

  out.push(await guarded("Health", async () => {
    const health = await api("GET", `/api/v1/tenants/${id}/health`);
    return h("section", { "aria-label": "Health" }, h("h2", {}, "Health"),
    h("dl", { class: "facts" },
      h("dt", {}, "Status"), h("dd", { class: health.status === "healthy" ? "ok" : "bad", "data-testid": "health-status" }, health.status),
      h("dt", {}, "Database"), h("dd", {}, health.checks.database ? "answers" : "does not answer"),
      h("dt", {}, "p50 / p99"), h("dd", {}, `${health.metrics.p50_ms.toFixed(1)} ms / ${health.metrics.p99_ms.toFixed(1)} ms`),
      h("dt", {}, "Error rate"), h("dd", {}, `${(health.metrics.error_rate * 100).toFixed(2)}% of ${health.metrics.requests} requests`)));
  }));

  out.push(await guarded("Features", async () => {
    const features = await api("GET", `/api/v1/tenants/${id}/features`);
    const flags = Object.entries(features);
    return h("section", { "aria-label": "Features" }, h("h2", {}, "Features"),
      flags.length ? h("ul", {}, flags.map(([k, on]) => h("li", {}, `${k}: `, h("span", { class: on ? "ok" : "muted" }, on ? "on" : "off"))))
        : h("p", { class: "muted" }, "No feature flags."));
  }));

  out.push(await guarded("Branding", () => brandingSection(t)));
  out.push(await guarded("Config", () => configSection(id)));
  const inTenant = { "X-Tenant-ID": t.id };
  out.push(await guarded("Users", () => usersSection(inTenant)));
  out.push(await guarded("Collections", () => collectionsSection(inTenant)));
  out.push(await guarded("Audit log", () => auditSection(`/api/v1/tenants/${id}/audit`, `/api/v1/tenants/${id}/audit/verify`)));
  return out;
}

/** A section whose data could not be read shows the API's title and detail in its place. */
async function guarded(label, build) {
  try { return await build(); } catch (e) {
    return h("section", { "aria-label": label }, h("h2", {}, label),
      h("p", { class: "bad" }, h("strong", {}, e.title || "Error"), " ", e.detail || ""));
  }
}

async function brandingSection(t) {
  const branding = (await api("GET", `/api/v1/tenants/${encodeURIComponent(t.slug)}/branding`)) || {};
  const color = typeof branding.primary_color === "string" && /^#[0-9a-fA-F]{3,8}$/.test(branding.primary_color) ? branding.primary_color : null;
  const swatch = h("div", { class: "brand-preview", "data-testid": "branding-preview" },
    h("strong", {}, branding.display_name || branding.name || t.name),
    color ? h("span", { class: "muted" }, ` primary colour ${color}`) : h("span", { class: "muted" }, " default colours"));
  // The colour comes from tenant data: applied as a property, never as markup.
  if (color) swatch.style.borderLeft = `8px solid ${color}`;
  return h("section", { "aria-label": "Branding" }, h("h2", {}, "Branding"), swatch,
    h("pre", {}, JSON.stringify(branding, null, 2)));
}

async function usersSection(headers) {
  const list = (await api("GET", "/api/v1/users?limit=100", undefined, headers)).items;
  const roles = ["admin", "manager", "user"];
  const rows = list.map((u) => {
    const role = h("select", { "aria-label": `Role of ${u.email || u.name}` }, roles.map((r) => h("option", { value: r, selected: r === u.role }, r)));
    role.addEventListener("change", () => attempt(async () => {
      await api("PATCH", `/api/v1/users/${encodeURIComponent(u.id)}`, { role: role.value }, headers);
      render();
    }));
    const toggle = h("button", { type: "button", class: "secondary", onclick: () => attempt(async () => {
      await api("PATCH", `/api/v1/users/${encodeURIComponent(u.id)}`, { active: !u.active }, headers);
      render();
    }) }, u.active ? `Deactivate ${u.email || u.name}` : `Activate ${u.email || u.name}`);
    return h("tr", {}, h("td", {}, u.email || ""), h("td", {}, u.name), h("td", {}, role),
      h("td", { "data-testid": `active-${u.email}` }, u.active ? "yes" : "no"), h("td", {}, toggle));
  });
  const email = h("input", { type: "email", required: true });
  const name = h("input", { type: "text", required: true });
  const password = h("input", { type: "password", required: true, autocomplete: "new-password" });
  const role = h("select", {}, roles.map((r) => h("option", { value: r, selected: r === "user" }, r)));
  const form = h("form", { class: "inline", "aria-label": "Create a user", novalidate: true },
    field("Email", email, "email"), field("Name", name, "name"), field("Password", password, "password"),
    field("Role", role, "role"), h("button", { type: "submit" }, "Create user"));
  onSubmit(form, async () => {
    await api("POST", "/api/v1/users", { email: email.value, name: name.value, password: password.value, role: role.value }, headers);
    render();
  });
  return h("section", { "aria-label": "Users" }, h("h2", {}, "Users"),
    h("div", { class: "table-wrap" }, h("table", { "aria-label": "Users" },
      h("thead", {}, h("tr", {}, ["Email", "Name", "Role", "Active", ""].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No users."))))),
    form);
}

async function collectionsSection(headers) {
  const list = (await api("GET", "/api/v1/collections?limit=100", undefined, headers)).items;
  return h("section", { "aria-label": "Collections" }, h("h2", {}, "Collections"),
    h("div", { class: "table-wrap" }, h("table", { "aria-label": "Collections" },
      h("thead", {}, h("tr", {}, ["Name", "Unique", "Indexed", "Schema"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, list.length ? list.map((c) => h("tr", {}, h("td", {}, c.name), h("td", {}, (c.unique || []).join(", ")),
        h("td", {}, (c.indexed || []).join(", ")), h("td", {}, c.schema ? "yes" : "none")))
        : h("tr", {}, h("td", { colspan: 4, class: "muted" }, "No collections."))))));
}

// ---- platform pages --------------------------------------------------------

async function plansPage() {
  const plans = (await api("GET", "/api/v1/plans")).items;
  const limitNames = ["max_users", "max_storage_bytes", "api_requests_per_day", "requests_per_second"];
  const sections = plans.map((p) => {
    const inputs = Object.fromEntries(limitNames.map((n) => [n, h("input", { type: "number", min: 0, value: p.limits[n] ?? "", placeholder: "no limit" })]));
    const flags = Object.entries(p.features || {}).map(([k, on]) => [k, h("input", { type: "checkbox", checked: on })]);
    const form = h("form", { class: "inline", "aria-label": `Plan ${p.code}`, novalidate: true },
      limitNames.map((n) => field(n, inputs[n], `limits.${n}`)),
      flags.map(([k, box]) => h("label", {}, k, box)),
      h("button", { type: "submit" }, `Save ${p.code}`));
    onSubmit(form, async () => {
      const limits = { ...p.limits };
      for (const n of limitNames) limits[n] = inputs[n].value === "" ? null : Number(inputs[n].value);
      const features = Object.fromEntries(flags.map(([k, box]) => [k, box.checked]));
      await api("PUT", `/api/v1/plans/${encodeURIComponent(p.code)}`,
        { name: p.name, limits, features, config_defaults: p.config_defaults || {}, default_isolation: p.default_isolation });
      render();
    });
    return h("section", { "aria-label": `Plan ${p.code}` }, h("h2", {}, `${p.name} `, h("span", { class: "muted" }, p.code)),
      h("p", { class: "muted" }, `default isolation: ${p.default_isolation || "shared"}`), form);
  });
  return [h("h1", {}, "Plans"), ...sections];
}

async function organizationsPage() {
  const orgs = (await api("GET", "/api/v1/organizations?limit=100")).items;
  const out = [h("h1", {}, "Organizations"), h("section", {}, h("div", { class: "table-wrap" }, h("table", { "aria-label": "Organizations" },
    h("thead", {}, h("tr", {}, ["Name", "Id", "Tenants"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, orgs.length ? orgs.map((o) => h("tr", {}, h("td", {}, o.name), h("td", {}, h("code", {}, o.id)),
      h("td", {}, h("a", { href: `#/tenants?organization_id=${encodeURIComponent(o.id)}` }, "tenants"))))
      : h("tr", {}, h("td", { colspan: 3, class: "muted" }, "No organizations.")))))) ];
  if (isSuper()) {
    const name = h("input", { type: "text", required: true });
    const form = h("form", { class: "inline", "aria-label": "Create an organization", novalidate: true },
      field("Name", name, "name"), h("button", { type: "submit" }, "Create organization"));
    onSubmit(form, async () => {
      await api("POST", "/api/v1/organizations", { name: name.value });
      render();
    });
    out.push(h("section", {}, h("h2", {}, "Create an organization"), form));
  }
  return out;
}

/** Per-tenant resolution rates as a sorted horizontal bar chart (SVG), with a table beside it. */
function compareChart(rows) {
  const width = 720, row = 24, labelW = 160;
  const height = Math.max(1, rows.length) * row + 10;
  const bars = rows.map((r, i) => {
    const w = Math.round((width - labelW - 60) * r.resolution_rate / 100);
    return [svg("text", { x: 0, y: i * row + 16 }, r.tenant.slug),
      svg("rect", { class: "bar-rect", x: labelW, y: i * row + 4, width: Math.max(w, 1), height: row - 8 },
        svg("title", {}, `${r.tenant.slug}: ${r.resolution_rate.toFixed(1)}%`)),
      svg("text", { x: labelW + w + 6, y: i * row + 16 }, `${r.resolution_rate.toFixed(1)}%`)];
  });
  return svg("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "Resolution rate by tenant, best first" }, ...bars.flat());
}

async function analyticsPage(params) {
  const collection = h("input", { type: "text", required: true, value: params.get("collection") || "" });
  const groupBy = h("input", { type: "text", required: true, value: params.get("group_by") || "" });
  const resolved = h("input", { type: "text", required: true, value: params.get("resolved") || "", placeholder: "resolved,closed" });
  const form = h("form", { class: "inline", "aria-label": "Compare tenants", novalidate: true },
    field("Collection", collection, "collection"), field("Group by", groupBy, "group_by"),
    field("Resolved values", resolved, "resolved"), h("button", { type: "submit" }, "Compare"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    location.hash = `#/analytics?${new URLSearchParams({ collection: collection.value, group_by: groupBy.value, resolved: resolved.value })}`;
  });
  const out = [h("h1", {}, "Cross-tenant analytics"), h("section", {}, form)];
  if (params.get("collection")) {
    const rows = await api("GET", `/api/v1/analytics/compare?${params}`);
    out.push(h("section", { "aria-label": "Comparison" }, compareChart(rows),
      h("div", { class: "table-wrap" }, h("table", { "aria-label": "Comparison" },
        h("thead", {}, h("tr", {}, ["Tenant", "Total", "Resolved", "Rate"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, rows.map((r) => h("tr", {}, h("td", {}, r.tenant.slug), h("td", {}, r.total), h("td", {}, r.resolved),
          h("td", {}, `${r.resolution_rate.toFixed(1)}%`))))))));
  }
  return out;
}

/** Export (with its download), import of an export file, and the move to the other tier: each a job. */
function mobility(t) {
  const id = encodeURIComponent(t.id);
  const download = h("div", { class: "actions" });
  const exportButton = h("button", { type: "button", class: "secondary", onclick: () => attempt(async () => {
    const { job_id: jobId } = await api("POST", `/api/v1/tenants/${id}/export`, { format: "ndjson" });
    const job = await followJob(jobId);
    if (job && job.status === "succeeded" && job.result_url) {
      // The file needs the token: fetched here, handed to the browser as a blob.
      download.replaceChildren(h("button", { type: "button", onclick: () => attempt(async () => {
        const blob = await request("GET", job.result_url, { raw: true });
        const link = h("a", { href: URL.createObjectURL(blob), download: `${t.slug}-export.ndjson` });
        document.body.append(link);
        link.click();
        link.remove();
      }) }, "Download export"));
    } else if (job) {
      showError({ title: `Export ${job.status}`, detail: job.error || "" });
    }
  }) }, "Export");
  const file = h("input", { type: "file", accept: ".ndjson,application/x-ndjson" });
  const importButton = h("button", { type: "button", class: "secondary", onclick: () => attempt(async () => {
    if (!file.files.length) throw new Problem(0, { title: "No file chosen", detail: "Choose an export file to import." });
    const { job_id: jobId } = await request("POST", `/api/v1/tenants/${id}/import`, { body: file.files[0], type: "application/x-ndjson" });
    const job = await followJob(jobId);
    if (job && job.status !== "succeeded") showError({ title: `Import ${job.status}`, detail: job.error || "" });
    else render();
  }) }, "Import");
  const other = t.isolation === "shared" ? "dedicated" : "shared";
  const moveButton = h("button", { type: "button", class: "secondary", onclick: () => attempt(async () => {
    const { job_id: jobId } = await api("POST", `/api/v1/tenants/${id}/move`, { isolation: other });
    const job = await followJob(jobId);
    if (job && job.status !== "succeeded") showError({ title: `Move ${job.status}`, detail: job.error || "" });
    else render();
  }) }, `Move to ${other}`);
  return h("div", {}, h("h2", {}, "Data"), h("div", { class: "actions" }, exportButton, moveButton), download,
    h("div", { class: "actions" }, h("label", {}, "Export file to import", file), importButton));
}

async function followJob(jobId) {
  const slot = document.getElementById("job");
  for (let i = 0; i < 600; i++) {
    const job = await api("GET", `/api/v1/jobs/${encodeURIComponent(jobId)}`);
    const pct = Math.round(job.progress * 100);
    if (slot) slot.replaceChildren(h("progress", { max: 100, value: pct, "aria-label": "Job progress" }), ` ${job.kind || "job"}: ${job.status} ${pct}%`);
    if (!["queued", "running"].includes(job.status)) return job;
    await new Promise((r) => setTimeout(r, 500));
  }
  return null;
}

async function configSection(id) {
  const config = await api("GET", `/api/v1/tenants/${id}/config`);
  const entries = Object.entries(config || {});
  const rows = entries.map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", { "data-key": k }, h("code", {}, JSON.stringify(v)))));
  // Encrypted values come masked; only a super-admin may ask for them in clear.
  const reveal = isSuper() && entries.some(([, v]) => v === "***") && h("button", { type: "button", class: "secondary", onclick: () => attempt(async () => {
    const clear = await api("GET", `/api/v1/tenants/${id}/config?reveal=true`);
    for (const cell of document.querySelectorAll("td[data-key]")) {
      const k = cell.getAttribute("data-key");
      if (k in clear) cell.replaceChildren(h("code", {}, JSON.stringify(clear[k])));
    }
  }) }, "Reveal encrypted values");
  const key = h("input", { type: "text", required: true });
  const value = h("input", { type: "text", required: true, placeholder: "JSON, e.g. true or \"blue\"" });
  const encrypted = h("input", { type: "checkbox" });
  const form = h("form", { class: "inline", "aria-label": "Set a config value", novalidate: true },
    field("Key", key, "key"), field("Value (JSON)", value, "value"),
    h("label", {}, "Encrypted", encrypted), h("button", { type: "submit" }, "Save"));
  onSubmit(form, async () => {
    let parsed;
    try { parsed = JSON.parse(value.value); } catch {
      showFieldErrors(form, { errors: [{ field: "value", message: "not valid JSON" }] });
      return;
    }
    await api("PUT", `/api/v1/tenants/${id}/config/${encodeURIComponent(key.value)}`, { value: parsed, encrypted: encrypted.checked });
    render();
  });
  return h("section", { "aria-label": "Config" }, h("h2", {}, "Config"),
    h("div", { class: "table-wrap" }, h("table", { "aria-label": "Config values" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Key"), h("th", { scope: "col" }, "Value"))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 2, class: "muted" }, "No overrides."))))),
    reveal, form);
}

async function auditSection(listPath, verifyPath) {
  const actor = h("input", { type: "text" });
  const action = h("input", { type: "text" });
  const body = h("tbody");
  const load = async () => {
    const q = new URLSearchParams({ limit: "50" });
    if (actor.value) q.set("actor", actor.value);
    if (action.value) q.set("action", action.value);
    const { items } = await api("GET", `${listPath}?${q}`);
    body.replaceChildren(...(items.length ? items.map((e) => h("tr", {},
      h("td", {}, e.at), h("td", {}, e.actor), h("td", {}, e.action), h("td", {}, e.resource))) : [h("tr", {}, h("td", { colspan: 4, class: "muted" }, "No entries."))]));
  };
  const filters = h("form", { class: "filters", "aria-label": "Filter the audit log" },
    field("Actor", actor, "actor"), field("Action", action, "action"), h("button", { type: "submit" }, "Filter"));
  filters.addEventListener("submit", (ev) => { ev.preventDefault(); attempt(load); });
  const verdict = h("p", { "aria-live": "polite", "data-testid": "verify-result" });
  const verify = verifyPath && h("button", { type: "button", class: "secondary", onclick: () => attempt(async () => {
    const v = await api("GET", verifyPath);
    verdict.className = v.valid ? "ok" : "bad";
    verdict.textContent = v.valid
      ? `Chain intact: ${v.entries} entries checked, first_broken: none`
      : `Chain broken: first_broken ${v.first_broken} (${v.entries} entries checked)`;
  }) }, "Verify chain");
  await load();
  return h("section", { "aria-label": "Audit log" }, h("h2", {}, "Audit log"), filters,
    h("div", { class: "actions" }, verify), verdict,
    h("div", { class: "table-wrap" }, h("table", { "aria-label": "Audit entries" },
      h("thead", {}, h("tr", {}, ["At", "Actor", "Action", "Resource"].map((c) => h("th", { scope: "col" }, c)))), body)));
}

async function ownTenantPage() {
  const t = session.tenant;
  const out = [h("h1", {}, `${t ? t.name : "Tenant"} `, h("span", { class: "muted" }, t ? t.slug : ""))];
  out.push(await usersSection({}));
  out.push(await collectionsSection({}));
  out.push(await auditSection("/api/v1/audit", null));
  return out;
}

// ---- routing ---------------------------------------------------------------

async function render() {
  drawChrome();
  const main = document.getElementById("main");
  const [path, query] = (location.hash.replace(/^#/, "") || "/").split("?");
  const params = new URLSearchParams(query || "");
  let page;
  if (!session.token) {
    page = loginPage();
  } else if (path.startsWith("/tenants/") && isPlatform()) {
    page = await attempt(() => tenantPage(decodeURIComponent(path.slice("/tenants/".length))));
  } else if (path === "/plans" && isSuper()) {
    page = await attempt(plansPage);
  } else if (path === "/organizations" && isPlatform()) {
    page = await attempt(organizationsPage);
  } else if (path === "/analytics" && isPlatform()) {
    page = await attempt(() => analyticsPage(params));
  } else if (path === "/platform-audit" && isSuper()) {
    page = await attempt(() => auditSection("/api/v1/platform/audit", null).then((s) => [h("h1", {}, "Platform audit"), s]));
  } else if (isPlatform()) {
    page = await attempt(() => tenantsPage(params));
  } else {
    page = await attempt(ownTenantPage);
  }
  main.replaceChildren(...(page || [h("p", { class: "muted" }, "This page could not be shown.")]));
}

window.addEventListener("hashchange", render);
window.addEventListener("DOMContentLoaded", render);
