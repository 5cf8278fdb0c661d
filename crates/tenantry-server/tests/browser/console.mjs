// The admin console end to end, in Debian's Chromium driven by
// playwright-core: the roles sign in through the page, do what an operator
// does, and see only what their role allows. A screenshot of each main page
// goes to the output folder.
//
//   node console.mjs <base-url> <admin-email> <admin-password> <screenshot-dir>
import { chromium } from "playwright-core";
import { mkdirSync, readFileSync } from "node:fs";
import assert from "node:assert/strict";

const [base, adminEmail, adminPassword, shots] = process.argv.slice(2);
assert.ok(base && adminEmail && adminPassword && shots, "usage: console.mjs <base> <email> <password> <dir>");
mkdirSync(shots, { recursive: true });

// ---- the world the roles sign in to, made through the API -----------------

async function call(method, path, token, body, headers = {}) {
  const res = await fetch(base + path, {
    method,
    headers: { "Content-Type": "application/json", ...(token ? { Authorization: `Bearer ${token}` } : {}), ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

async function ok(method, path, token, body, headers) {
  const res = await call(method, path, token, body, headers);
  assert.ok(res.status < 300, `${method} ${path}: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body;
}

const PASSWORD = "Console-Passw0rd!";
const staff = (await ok("POST", "/api/v1/auth/login", null, { email: adminEmail, password: adminPassword })).access_token;
const org = await ok("POST", "/api/v1/organizations", staff, { name: "Acme Holdings" });
await ok("POST", `/api/v1/organizations/${org.id}/admins`, staff, { email: "org-admin@acme.test", password: PASSWORD, name: "Org Admin" });
const mine = await ok("POST", "/api/v1/tenants", staff, { name: "Acme One", slug: "acme-one", plan: "basic", organization_id: org.id });
await ok("POST", "/api/v1/tenants", staff, { name: "Other Co", slug: "other-co", plan: "basic" });
await ok("POST", "/api/v1/users", staff, { email: "tenant-admin@acme.test", password: PASSWORD, name: "Tenant Admin", role: "admin" },
  { "X-Tenant-ID": mine.id });
// Traffic for the usage chart: the tenant admin's own requests.
const tenantToken = (await ok("POST", "/api/v1/auth/login", null, { email: "tenant-admin@acme.test", password: PASSWORD, tenant: "acme-one" })).access_token;
for (let i = 0; i < 5; i++) await ok("POST", "/api/v1/collections/notes/records", tenantToken, { n: i });
// Tickets in two tenants for the cross-tenant comparison: 2 of 3 resolved, 1 of 2.
for (const status of ["done", "done", "open"]) await ok("POST", "/api/v1/collections/tickets/records", tenantToken, { status });
const other = (await ok("GET", "/api/v1/tenants/other-co", staff)).id;
for (const status of ["done", "open"]) await ok("POST", "/api/v1/collections/tickets/records", staff, { status }, { "X-Tenant-ID": other });
// A tenant admin's token reaches no other tenant, whichever way it names one.
for (const headers of [{ "X-Tenant-Slug": "other-co" }, {}]) {
  const res = await call("GET", headers["X-Tenant-Slug"] ? "/api/v1/users" : "/api/v1/tenants/other-co", tenantToken, undefined, headers);
  assert.ok([401, 403, 404].includes(res.status), `tenant admin reached another tenant: ${res.status}`);
}

// ---- the browser ---------------------------------------------------------

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  // This machine's network is closed: without these Chromium keeps trying
  // to reach Google's services.
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
let failed = false;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const consoleErrors = [];
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });

  async function signIn(email, password, tenant) {
    await page.goto(`${base}/admin`);
    await page.getByLabel("Email").fill(email);
    await page.getByLabel("Password").fill(password);
    if (tenant) await page.getByLabel("Tenant (slug)").fill(tenant);
    await page.getByRole("button", { name: "Sign in" }).click();
  }
  const shot = (name) => page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
  const tenantsTable = () => page.getByRole("table", { name: "Tenants" });

  // A wrong password shows the API's problem title, not a blank page.
  await signIn(adminEmail, "not-the-password");
  await page.getByRole("alert").filter({ hasText: /./ }).waitFor();
  await shot("login-refused");

  // Super-admin: every tenant, a create refused then made, plan, config,
  // usage chart, suspension and the audit chain.
  await signIn(adminEmail, adminPassword);
  await tenantsTable().getByRole("link", { name: "other-co" }).waitFor();
  await tenantsTable().getByRole("link", { name: "acme-one" }).waitFor();
  await shot("tenants");

  const create = page.getByRole("form", { name: "Create a tenant" });
  await create.getByLabel("Name").fill("Console Made");
  await create.getByLabel("Slug").fill("Bad Slug!");
  await create.getByRole("button", { name: "Create" }).click();
  const slugError = create.locator('.field-error[data-field="slug"]');
  await slugError.filter({ hasText: /./ }).waitFor();
  await page.getByRole("alert").filter({ hasText: /./ }).waitFor();
  await shot("create-refused");
  await create.getByLabel("Slug").fill("console-made");
  await create.getByRole("button", { name: "Create" }).click();
  await page.getByRole("heading", { name: /Console Made/ }).waitFor();

  await page.getByLabel("New plan").selectOption("premium");
  await page.getByRole("button", { name: "Change plan" }).click();
  await page.getByTestId("tenant-plan").filter({ hasText: "premium" }).waitFor();

  const config = page.getByRole("form", { name: "Set a config value" });
  await config.getByLabel("Key").fill("theme.color");
  await config.getByLabel("Value (JSON)").fill('"teal"');
  await config.getByRole("button", { name: "Save" }).click();
  await page.getByRole("table", { name: "Config values" }).getByText("theme.color").waitFor();
  // An encrypted value shows masked until a super-admin reveals it.
  await config.getByLabel("Key").fill("smtp.password");
  await config.getByLabel("Value (JSON)").fill('"s3cret-value"');
  await config.getByLabel("Encrypted").check();
  await config.getByRole("button", { name: "Save" }).click();
  const secret = page.locator('td[data-key="smtp.password"]');
  await secret.filter({ hasText: "***" }).waitFor();
  await page.getByRole("button", { name: "Reveal encrypted values" }).click();
  await secret.filter({ hasText: "s3cret-value" }).waitFor();

  // Users of the tenant, managed by staff acting inside it.
  const newUser = page.getByRole("form", { name: "Create a user" });
  await newUser.getByLabel("Email").fill("clerk@console.test");
  await newUser.getByLabel("Name").fill("Clerk");
  await newUser.getByLabel("Password").fill(PASSWORD);
  await newUser.getByRole("button", { name: "Create user" }).click();
  await page.getByRole("table", { name: "Users" }).getByRole("cell", { name: "clerk@console.test", exact: true }).waitFor();
  await page.getByLabel("Role of clerk@console.test").selectOption("manager");
  await page.waitForFunction(() => document.querySelector('select[aria-label="Role of clerk@console.test"]')?.value === "manager");
  await page.getByRole("button", { name: "Deactivate clerk@console.test" }).click();
  await page.getByTestId("active-clerk@console.test").filter({ hasText: "no" }).waitFor();
  await page.getByTestId("health-status").waitFor();

  await page.getByRole("button", { name: "Suspend" }).click();
  await page.getByTestId("tenant-status").filter({ hasText: "suspended" }).waitFor();
  await page.getByRole("button", { name: "Verify chain" }).click();
  await page.getByTestId("verify-result").filter({ hasText: "Chain intact" }).waitFor();
  await page.getByRole("table", { name: "Audit entries" }).getByText("tenant.suspend").first().waitFor();
  await shot("tenant-detail");
  // The audit filter keeps only what it names.
  const auditFilter = page.getByRole("form", { name: "Filter the audit log" });
  await auditFilter.getByLabel("Action").fill("config.put");
  await auditFilter.getByRole("button", { name: "Filter" }).click();
  await page.waitForFunction(() => {
    const cells = [...document.querySelectorAll('table[aria-label="Audit entries"] tbody tr td:nth-child(3)')].map((c) => c.textContent);
    return cells.length === 2 && cells.every((c) => c === "config.put");
  });

  // The usage chart draws the tenant admin's requests.
  await page.goto(`${base}/admin#/tenants/acme-one`);
  await page.getByRole("heading", { name: /Acme One/ }).waitFor();
  const bars = page.locator("svg.chart rect.bar-rect");
  await bars.first().waitFor({ state: "attached" });
  const heights = await bars.evaluateAll((rs) => rs.map((r) => Number(r.getAttribute("height"))));
  assert.ok(heights.some((x) => x > 0), `the usage chart has no bar above zero: ${heights}`);
  // Users against max_users: one user of the plan's limit, drawn as a bar.
  const quota = page.locator("svg.quota-chart");
  assert.match(await quota.getAttribute("aria-label"), /Users 1 of \d+/);
  await shot("usage-chart");

  // Mobility: an export downloaded, imported into a new tenant, which then
  // moves to the dedicated tier; each a job whose progress the page follows.
  await page.getByRole("button", { name: "Export", exact: true }).click();
  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.getByRole("button", { name: "Download export" }).click(),
  ]);
  const exported = `${shots}/acme-one-export.ndjson`;
  await download.saveAs(exported);
  assert.match(readFileSync(exported, "utf8"), /tickets/, "the export holds no tickets");
  await ok("POST", "/api/v1/tenants", staff, { name: "Import Target", slug: "import-target", plan: "basic" });
  await page.goto(`${base}/admin#/tenants/import-target`);
  // A hash change redraws in place: wait for the new page before using it.
  await page.getByRole("heading", { name: /Import Target/ }).waitFor();
  await page.getByLabel("Export file to import").setInputFiles(exported);
  await page.getByRole("button", { name: "Import", exact: true }).click();
  await page.getByRole("table", { name: "Collections" }).getByText("tickets").waitFor();
  await page.getByRole("button", { name: "Move to dedicated" }).click();
  await page.getByTestId("tenant-isolation").filter({ hasText: "dedicated" }).waitFor();
  await page.getByRole("table", { name: "Collections" }).getByText("tickets").waitFor();
  await shot("after-import-and-move");

  // Platform pages: plans edited, organizations, the comparison chart, platform audit.
  await page.goto(`${base}/admin#/plans`);
  await page.getByRole("heading", { name: "Plans" }).waitFor();
  const basic = page.getByRole("form", { name: "Plan basic" });
  await basic.getByLabel("max_users").fill("42");
  await basic.getByRole("button", { name: "Save basic" }).click();
  await page.waitForFunction(() => document.querySelector('form[aria-label="Plan basic"] input[name="limits.max_users"]')?.getAttribute("value") === "42");
  assert.equal((await ok("GET", "/api/v1/plans/basic", staff)).limits.max_users, 42);
  await shot("plans");
  await page.goto(`${base}/admin#/organizations`);
  await page.getByRole("table", { name: "Organizations" }).getByText("Acme Holdings").waitFor();
  await shot("organizations");
  await page.goto(`${base}/admin#/analytics`);
  const compare = page.getByRole("form", { name: "Compare tenants" });
  await compare.getByLabel("Collection").fill("tickets");
  await compare.getByLabel("Group by").fill("status");
  await compare.getByLabel("Resolved values").fill("done");
  await compare.getByRole("button", { name: "Compare" }).click();
  const compared = page.getByRole("table", { name: "Comparison" }).locator("tbody tr");
  await compared.first().waitFor();
  const shown = await compared.evaluateAll((rows) => rows.map((r) => [r.cells[0].textContent, parseFloat(r.cells[3].textContent)]));
  const rates = shown.map(([, rate]) => rate);
  assert.deepEqual(rates, [...rates].sort((a, b) => b - a), `the comparison is not sorted by rate: ${JSON.stringify(shown)}`);
  const slugs = shown.map(([slug]) => slug);
  assert.ok(slugs.indexOf("acme-one") < slugs.indexOf("other-co") && slugs.indexOf("acme-one") >= 0,
    `2 of 3 resolved should rank above 1 of 2: ${JSON.stringify(shown)}`);
  assert.ok(await page.locator("svg.chart rect.bar-rect").count() >= 2, "the comparison chart has no bars");
  await shot("analytics");
  await page.goto(`${base}/admin#/platform-audit`);
  await page.getByRole("table", { name: "Audit entries" }).locator("tbody tr").first().waitFor();
  await shot("platform-audit");

  // Delete asks for the slug; a wrong answer deletes nothing.
  await page.goto(`${base}/admin#/tenants/console-made`);
  await page.getByRole("heading", { name: /Console Made/ }).waitFor();
  page.once("dialog", (d) => d.accept("not-the-slug"));
  await page.getByRole("button", { name: "Delete…" }).click();
  assert.equal((await call("GET", "/api/v1/tenants/console-made", staff)).status, 200, "deleted without the slug");
  let asked = "";
  page.once("dialog", (d) => { asked = d.message(); d.accept("console-made"); });
  await page.getByRole("button", { name: "Delete…" }).click();
  await tenantsTable().waitFor();
  assert.match(asked, /console-made/, "the confirmation does not name the slug");
  const gone = await call("GET", "/api/v1/tenants/console-made", staff);
  assert.ok(gone.status === 404 || ["deleting", "deleted"].includes(gone.body.status),
    `the tenant was not deleted: ${gone.status} ${JSON.stringify(gone.body)}`);

  // Phone width: the tenants page fits without sideways scrolling.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(`${base}/admin#/tenants`);
  await tenantsTable().waitFor();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `the tenants page scrolls sideways at phone width by ${overflow}px`);
  await shot("tenants-phone");
  await page.goto(`${base}/admin#/tenants/acme-one`);
  await page.getByRole("heading", { name: /Acme One/ }).waitFor();
  await page.locator("svg.quota-chart").waitFor();
  const detailOverflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(detailOverflow <= 1, `a tenant's page scrolls sideways at phone width by ${detailOverflow}px`);
  await shot("tenant-phone");
  await page.setViewportSize({ width: 1280, height: 900 });

  // Org admin: its organization's tenants only; another one's page is refused.
  await page.getByRole("button", { name: "Sign out" }).click();
  await signIn("org-admin@acme.test", PASSWORD);
  await tenantsTable().getByRole("link", { name: "acme-one" }).waitFor();
  assert.equal(await tenantsTable().getByRole("link", { name: "other-co" }).count(), 0, "the org admin sees another organization's tenant");
  await shot("org-admin-tenants");
  await page.goto(`${base}/admin#/tenants/other-co`);
  await page.getByRole("alert").filter({ hasText: /not found|forbidden/i }).waitFor();

  // Tenant admin: its own tenant's users and audit; another tenant refuses it.
  await page.goto(`${base}/admin`);
  await signIn("tenant-admin@acme.test", PASSWORD, "acme-one");
  await page.getByRole("table", { name: "Users" }).getByRole("cell", { name: "tenant-admin@acme.test", exact: true }).waitFor();
  await page.getByRole("table", { name: "Audit entries" }).getByText("record.create").first().waitFor();
  await page.getByRole("table", { name: "Collections" }).getByText("tickets").waitFor();
  const own = page.getByRole("form", { name: "Create a user" });
  await own.getByLabel("Email").fill("officer@acme.test");
  await own.getByLabel("Name").fill("Officer");
  await own.getByLabel("Password").fill(PASSWORD);
  await own.getByRole("button", { name: "Create user" }).click();
  await page.getByRole("table", { name: "Users" }).getByRole("cell", { name: "officer@acme.test", exact: true }).waitFor();
  await shot("tenant-admin");
  await page.getByRole("button", { name: "Sign out" }).click();
  await signIn("tenant-admin@acme.test", PASSWORD, "other-co");
  await page.getByRole("alert").filter({ hasText: /./ }).waitFor();

  assert.deepEqual(consoleErrors.filter((e) => !/status of (401|403|404|422)/.test(e)), [], "errors in the page's console");
} catch (e) {
  failed = true;
  console.error(e);
  // Where it stopped, for whoever reads the failure.
  const last = browser.contexts()[0]?.pages()[0];
  if (last) await last.screenshot({ path: `${shots}/failure.png`, fullPage: true }).catch(() => {});
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
