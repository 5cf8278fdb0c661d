// The admin console end to end, in Debian's Chromium driven by
// playwright-core: the roles sign in through the page, do what an operator
// does, and see only what their role allows. A screenshot of each main page
// goes to the output folder.
//
//   node console.mjs <base-url> <admin-email> <admin-password> <screenshot-dir>
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
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

  await page.getByRole("button", { name: "Suspend" }).click();
  await page.getByTestId("tenant-status").filter({ hasText: "suspended" }).waitFor();
  await page.getByRole("button", { name: "Verify chain" }).click();
  await page.getByTestId("verify-result").filter({ hasText: "Chain intact" }).waitFor();
  await page.getByRole("table", { name: "Audit entries" }).getByText("tenant.suspend").first().waitFor();
  await shot("tenant-detail");

  // The usage chart draws the tenant admin's requests.
  await page.goto(`${base}/admin#/tenants/acme-one`);
  await page.getByRole("heading", { name: /Acme One/ }).waitFor();
  const bars = page.locator("svg.chart rect.bar-rect");
  await bars.first().waitFor({ state: "attached" });
  const heights = await bars.evaluateAll((rs) => rs.map((r) => Number(r.getAttribute("height"))));
  assert.ok(heights.some((x) => x > 0), `the usage chart has no bar above zero: ${heights}`);
  await shot("usage-chart");

  // Phone width: the tenants page fits without sideways scrolling.
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(`${base}/admin#/tenants`);
  await tenantsTable().waitFor();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `the tenants page scrolls sideways at phone width by ${overflow}px`);
  await shot("tenants-phone");
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
  await page.getByRole("table", { name: "Users" }).getByText("tenant-admin@acme.test").waitFor();
  await page.getByRole("table", { name: "Audit entries" }).getByText("record.create").first().waitFor();
  await shot("tenant-admin");
  await page.getByRole("button", { name: "Sign out" }).click();
  await signIn("tenant-admin@acme.test", PASSWORD, "other-co");
  await page.getByRole("alert").filter({ hasText: /./ }).waitFor();

  assert.deepEqual(consoleErrors.filter((e) => !/status of (401|403|404|422)/.test(e)), [], "errors in the page's console");
} catch (e) {
  failed = true;
  console.error(e);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
