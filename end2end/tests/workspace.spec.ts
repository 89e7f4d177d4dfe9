import { expect, test } from "@playwright/test";

test("create a workspace, reload it, and open it as a second teammate", async ({ page, browser }) => {
  // A strict Content-Security-Policy is sent, and the page hydrates without breaking it.
  const violations: string[] = [];
  page.on("console", (m) => {
    if (m.text().includes("Content Security Policy")) violations.push(m.text());
  });
  const home = await page.goto("/");
  expect(home?.headers()["content-security-policy"]).toContain("'nonce-");
  await expect(page.getByRole("heading", { name: "Huddle" })).toBeVisible();
  // Once hydrated, the button calls the JSON API instead of posting the form.
  await expect(page.locator("body[data-hydrated]")).toBeAttached();
  const api = page.waitForRequest((r) => r.url().endsWith("/api/workspace/create") && r.method() === "POST");
  await page.getByTestId("new-workspace").click();
  expect((await api).postDataJSON()).toEqual({ agent: "mock" });
  await page.waitForURL(/\/w\/[0-9a-f]{32}$/);
  const url = page.url();
  const id = url.split("/w/")[1];
  await expect(page.getByTestId("workspace-id")).toHaveText(id);
  await expect(page.getByTestId("agent")).toHaveText("mock");
  // The agent works in the workspace's own directory, shown in the header.
  await expect(page.getByTestId("working-dir")).toHaveText(new RegExp(`/workspaces/${id}$`));

  await page.reload();
  await expect(page.getByTestId("workspace-id")).toHaveText(id);

  const teammate = await browser.newContext();
  const other = await teammate.newPage();
  await other.goto(url);
  await expect(other.getByTestId("workspace-id")).toHaveText(id);
  await expect(other.getByTestId("agent")).toHaveText("mock");
  await teammate.close();
  expect(violations).toEqual([]);
});

test("the form works without WebAssembly", async ({ browser }) => {
  const context = await browser.newContext({ javaScriptEnabled: false });
  const page = await context.newPage();
  await page.goto("/");
  await page.getByTestId("new-workspace").click();
  await page.waitForURL(/\/w\/[0-9a-f]{32}$/);
  await expect(page.getByTestId("agent")).toHaveText("mock");
  await context.close();
});

test("unknown and malformed workspace ids get a 404 page", async ({ page, request }) => {
  for (const id of ["0123456789abcdef0123456789abcdef", "not-an-id"]) {
    const res = await page.goto(`/w/${id}`);
    expect(res?.status()).toBe(404);
    await expect(page.getByRole("heading", { name: "Not found" })).toBeVisible();
  }
  const api = await request.post("/api/workspace/get", { data: { workspaceId: "nope" } });
  expect(api.status()).toBe(404);
  expect((await api.json()).code).toBe("not_found");
});

test("the JSON API creates workspaces for scripts", async ({ request }) => {
  const res = await request.post("/api/workspace/create", { data: { agent: "mock" } });
  expect(res.status()).toBe(200);
  const body = await res.json();
  expect(body.workspaceId).toMatch(/^[0-9a-f]{32}$/);
  expect(body.url).toBe(`/w/${body.workspaceId}`);
  const bad = await request.post("/api/workspace/create", { data: { agent: "no spaces allowed" } });
  expect(bad.status()).toBe(400);
  expect((await bad.json()).code).toBe("bad_request");
});
