import { expect } from "@playwright/test";
import { admin, hydrated, inviteLink, signInLink, test } from "./helpers";

test("the operator signs in, creates a workspace, reloads it; a teammate needs an invite", async ({ page, browser }) => {
  // A strict Content-Security-Policy is sent, and the page hydrates without breaking it.
  const violations: string[] = [];
  page.on("console", (m) => {
    if (m.text().includes("Content Security Policy")) violations.push(m.text());
  });
  // Before signing in, nobody may create a workspace.
  const home = await page.goto("/");
  expect(home?.headers()["content-security-policy"]).toContain("'nonce-");
  await expect(page.getByRole("heading", { name: "Huddle" })).toBeVisible();
  await expect(page.getByTestId("not-signed-in")).toBeVisible();
  await expect(page.getByTestId("new-workspace")).toHaveCount(0);
  await page.goto(signInLink());
  await expect(page).toHaveURL(/\/$/);
  // Once hydrated, the button calls the JSON API instead of posting the form.
  await hydrated(page);
  const api = page.waitForRequest((r) => r.url().endsWith("/api/workspace/create") && r.method() === "POST");
  // The first agent that is ready is picked: here the scripted one (Claude Code and Codex have no
  // keys), not mock.
  await expect(page.locator("#agent")).toHaveValue("pi");
  await page.locator("#agent").selectOption("mock");
  await page.getByTestId("workspace-name-new").fill("Release train");
  await page.getByTestId("new-workspace").click();
  expect((await api).postDataJSON()).toEqual({ agent: "mock", directory: null, name: "Release train" });
  await page.waitForURL(/\/w\/[0-9a-f]{32}$/);
  const url = page.url();
  const id = url.split("/w/")[1];
  await expect(page.getByTestId("workspace-id")).toHaveText(id);
  // Its name is in the header and the tab; the owner renames it, and it shows at once.
  await expect(page.getByTestId("workspace-name")).toHaveText("Release train");
  await expect(page).toHaveTitle("Release train · Huddle");
  await hydrated(page);
  await page.getByTestId("rename-workspace").click();
  await page.getByTestId("workspace-name-input").fill("Release train, take 2");
  await page.getByTestId("save-workspace-name").click();
  await expect(page.getByTestId("workspace-name")).toHaveText("Release train, take 2");
  await expect(page).toHaveTitle("Release train, take 2 · Huddle");
  await expect(page.getByTestId("system").filter({ hasText: "renamed the workspace to “Release train, take 2”" })).toBeVisible();
  await expect(page.getByTestId("agent")).toHaveText("mock");
  await expect(page.getByTestId("my-role")).toHaveText("owner");
  // The agent works in the workspace's own directory, shown in the header.
  await expect(page.getByTestId("working-dir")).toHaveText(new RegExp(`/workspaces/${id}$`));

  await page.reload();
  await expect(page.getByTestId("workspace-id")).toHaveText(id);
  await expect(page.getByTestId("workspace-name")).toHaveText("Release train, take 2");
  // The home page lists it by name, with its agent, status and last activity.
  await page.goto("/");
  const mine = page.getByTestId("my-workspace").filter({ hasText: "Release train, take 2" });
  await expect(mine).toContainText("mock");
  await expect(mine).toHaveAttribute("data-status", /idle|asleep/);
  await expect(mine.locator("time")).toContainText("UTC");
  await page.goto(url);

  // A teammate with the bare URL is told to ask for an invite; with a member link they are in.
  const teammate = await browser.newContext();
  const other = await teammate.newPage();
  const refused = await other.goto(url);
  expect(refused?.status()).toBe(403);
  await expect(other.getByTestId("no-access")).toContainText("Ask the owner for an invite");
  await other.goto(await inviteLink(page, url, "member"));
  await expect(other).toHaveURL(url);
  await expect(other.getByTestId("workspace-id")).toHaveText(id);
  await expect(other.getByTestId("my-role")).toHaveText("member");
  await teammate.close();
  expect(violations).toEqual([]);
});

test("the form works without WebAssembly", async ({ browser }) => {
  const context = await browser.newContext({ javaScriptEnabled: false });
  const page = await context.newPage();
  await page.goto(signInLink());
  await page.getByTestId("new-workspace").click();
  await page.waitForURL(/\/w\/[0-9a-f]{32}$/);
  await expect(page.getByTestId("agent")).toHaveText("pi");
  await context.close();
});

test("unknown and malformed workspace ids get a 404 page", async ({ page, request }) => {
  for (const id of ["0123456789abcdef0123456789abcdef", "not-an-id"]) {
    const res = await page.goto(`/w/${id}`);
    expect(res?.status()).toBe(404);
    await expect(page.getByRole("heading", { name: "Not found" })).toBeVisible();
  }
  const api = await request.post("/api/workspace/get", { data: { workspaceId: "nope" }, headers: admin });
  expect(api.status()).toBe(404);
  expect((await api.json()).code).toBe("not_found");
});

test("every page Huddle serves works under its Content-Security-Policy, error pages too", async ({ page }) => {
  const violations: string[] = [];
  page.on("console", (m) => {
    if (m.text().includes("Content Security Policy")) violations.push(`${page.url()}: ${m.text()}`);
  });
  const styled = () =>
    page.evaluate(() => [...document.styleSheets].some((s) => s.href?.endsWith("/pkg/huddle.css") && s.cssRules.length > 0));
  // A path nothing serves: the not-found page, whose scripts run (it hydrates) and styles load.
  let res = await page.goto("/no/such/page");
  expect(res?.status()).toBe(404);
  await expect(page.getByRole("heading", { name: "Not found" })).toBeVisible();
  await expect(page.locator("body[data-hydrated]")).toHaveCount(1);
  expect(await styled()).toBe(true);
  // A workspace that is not there.
  res = await page.goto("/w/0123456789abcdef0123456789abcdef");
  expect(res?.status()).toBe(404);
  await expect(page.locator("body[data-hydrated]")).toHaveCount(1);
  expect(await styled()).toBe(true);
  // Links that do not work: a short page, styled, that runs nothing.
  for (const link of ["/join/not-a-real-invite", "/sign-in/not-the-link"]) {
    res = await page.goto(link);
    expect(res?.status()).toBeGreaterThanOrEqual(400);
    await expect(page.getByTestId("link-error")).toBeVisible();
    expect(await styled()).toBe(true);
  }
  expect(violations).toEqual([]);
});

test("the JSON API creates workspaces for scripts with the admin token, and nobody else", async ({ request }) => {
  const res = await request.post("/api/workspace/create", { data: { agent: "mock" }, headers: admin });
  expect(res.status()).toBe(200);
  const body = await res.json();
  expect(body.workspaceId).toMatch(/^[0-9a-f]{32}$/);
  expect(body.url).toBe(`/w/${body.workspaceId}`);
  const bad = await request.post("/api/workspace/create", { data: { agent: "no spaces allowed" }, headers: admin });
  expect(bad.status()).toBe(400);
  expect((await bad.json()).code).toBe("bad_request");
  const nobody = await request.post("/api/workspace/create", { data: { agent: "mock" } });
  expect(nobody.status()).toBe(401);
  expect((await nobody.json()).code).toBe("unauthorized");
});
