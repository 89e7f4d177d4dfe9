import { expect } from "@playwright/test";
import { admin, hydrated, signInLink, test } from "./helpers";

test("a long room shows its recent part first and pages older history in as you scroll up", async ({ browser, request }) => {
  test.setTimeout(180_000);
  const created = await request.post("/api/workspace/create", { data: { agent: "pi" }, headers: admin });
  const { workspaceId, url } = await created.json();
  for (let i = 0; i < 4; i++) {
    await request.post("/api/workspace/prompt", { data: { workspaceId, text: "stream 2500" }, headers: admin });
    await expect
      .poll(async () => (await (await request.post("/api/workspace/info", { data: { workspaceId }, headers: admin })).json()).status, {
        timeout: 60_000,
      })
      .toBe("idle");
  }
  const page = await (await browser.newContext()).newPage();
  await page.goto(signInLink());
  await page.goto(url);
  await hydrated(page);
  // Four replies of 2,500 chunks: the page starts with the latest ones.
  const shown = await page.getByTestId("agent-message").count();
  expect(shown).toBeLessThan(4);
  await expect(page.getByTestId("older")).toBeVisible();
  // Scrolling to the top brings the rest, a page at a time (each keeps what was on screen in
  // place, so one scrolls up again), in order, without duplicates.
  await expect
    .poll(async () => {
      await page.evaluate(() => window.scrollTo(0, 0));
      return page.getByTestId("agent-message").count();
    })
    .toBe(4);
  await expect(page.getByTestId("older")).toBeHidden();
  expect(await page.locator('[data-testid="chat"] .text').allTextContents()).toEqual([
    "stream 2500",
    "stream 2500",
    "stream 2500",
    "stream 2500",
  ]);
  // The room stays live after paging: a new reply streams in below.
  await request.post("/api/workspace/prompt", { data: { workspaceId, text: "stream 3" }, headers: admin });
  await expect(page.getByTestId("agent-message")).toHaveCount(5);
  await expect(page.getByTestId("agent-message").last()).toContainText("chunk 2");
  await page.context().close();
});
