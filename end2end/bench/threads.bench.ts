import { expect, test } from "@playwright/test";
import { admin, signInLink } from "../tests/helpers";

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

// A busy workspace: 50 threads, 10 of them working at once (each agent streaming ten chunks a
// second), as one person sees it in Chromium.
test("50 threads, 10 working: the thread list's bytes, time to interactive, switching threads", async ({
  browser,
  request,
}) => {
  test.setTimeout(600_000);
  const post = async (path: string, data: object) => {
    const res = await request.post(path, { data, headers: admin });
    expect(res.ok(), await res.text()).toBeTruthy();
    return res.json();
  };
  const { workspaceId } = await post("/api/workspace/create", { agent: "pi" });
  const { threads: first } = await post("/api/workspace/threads", { workspaceId });
  const ids: string[] = [first[0].threadId];
  for (let i = 1; i < 50; i++) {
    const made = await post("/api/workspace/threads/create", { workspaceId, title: `Task ${i}` });
    ids.push(made.threadId);
  }
  // Each thread has a short conversation.
  for (const threadId of ids) {
    await post("/api/workspace/prompt", { workspaceId, threadId, text: "stream 20" });
  }
  const idle = (threadId: string) =>
    expect
      .poll(async () => (await post("/api/workspace/info", { workspaceId, threadId })).status, { timeout: 120_000 })
      .toBe("idle");
  for (const threadId of ids) await idle(threadId);
  // Ten of them working at once, for the rest of the run.
  const working = ids.slice(0, 10);
  for (const threadId of working) {
    await post("/api/workspace/prompt", { workspaceId, threadId, text: "pace 100000 10" });
  }
  await expect
    .poll(async () => (await post("/api/workspace/threads", { workspaceId })).threads.filter((t: { status: string }) => t.status === "working").length, { timeout: 60_000 })
    .toBe(10);

  const page = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
  await page.goto(signInLink());
  const quiet = ids[20];
  const url = `/w/${workspaceId}/t/${quiet}`;
  const html = await (await request.get(url, { headers: admin })).text();
  const nav = html.match(/<nav[^>]*data-testid="threads"[\s\S]*?<\/nav>/)?.[0] ?? "";
  console.log(
    `page with 50 threads: ${(Buffer.byteLength(html) / 1024).toFixed(0)} KB, of it the thread list ${(Buffer.byteLength(nav) / 1024).toFixed(1)} KB`,
  );
  const tti: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t0 = Date.now();
    await page.goto(url);
    await page.locator("body[data-hydrated]").waitFor();
    await expect(page.getByTestId("reconnecting")).toBeHidden();
    await expect(page.getByTestId("thread")).toHaveCount(50);
    tti.push(Date.now() - t0);
  }
  console.log(`time to interactive with the list: p50 ${pct(tti, 50)} ms, max ${Math.max(...tti)} ms (5 loads)`);

  // Switching: a click on a thread in the list until that thread's last row shows, hydrated and
  // streaming; half of the targets are working.
  const switches: number[] = [];
  for (let i = 0; i < 40; i++) {
    const target = ids[(i * 7) % 50];
    if (page.url().endsWith(target)) continue;
    const t0 = Date.now();
    await page.locator(`[data-testid="thread"][data-thread-id="${target}"] a`).click({ timeout: 30_000 });
    await page.waitForURL(`**/t/${target}`, { timeout: 30_000 });
    await page.locator("body[data-hydrated]").waitFor();
    await expect(page.getByTestId("reconnecting")).toBeHidden();
    await expect(page.locator('[data-testid="timeline"] > :last-child')).toBeVisible();
    switches.push(Date.now() - t0);
  }
  console.log(
    `switching threads (click to the thread's last row, ${switches.length} switches): p50 ${pct(switches, 50)} ms, p99 ${pct(switches, 99)} ms`,
  );
  for (const threadId of working) {
    await post("/api/workspace/cancel", { workspaceId, threadId });
  }
});
