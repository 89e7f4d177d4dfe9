import { expect, type Page } from "@playwright/test";
import * as fs from "node:fs";
import * as path from "node:path";
import { createRoom, dataDir, hydrated, join, operator, send, shots, workspaceId, test } from "./helpers";

/** Makes an invite link in the owner's "People & invites" panel. */
async function linkFromPanel(owner: Page, role: "member" | "viewer"): Promise<string> {
  await owner.getByTestId(`invite-${role}`).click();
  const out = owner.locator(`[data-testid="invite-url"][data-role="${role}"]`);
  await expect(out).toHaveValue(/\/join\//);
  return out.inputValue();
}

test("an owner, a member and a viewer each get what their role allows", async ({ browser }) => {
  test.setTimeout(120_000);
  const violations: string[] = [];
  const owner = await operator(browser, "Olga");
  owner.on("console", (m) => {
    if (m.text().includes("Content Security Policy")) violations.push(m.text());
  });
  const url = await createRoom(owner, "pi");
  const ws = workspaceId(url);
  const res = await owner.goto(url);
  expect(res?.headers()["content-security-policy"]).toContain("frame-ancestors 'none'");
  // The panel opens in the browser: a click before hydration does nothing (it timed out in CI).
  await hydrated(owner);
  await owner.getByTestId("manage").click();
  const memberLink = await linkFromPanel(owner, "member");
  const viewerLink = await linkFromPanel(owner, "viewer");

  const member = await join(browser, memberLink, "Mia");
  const viewer = await join(browser, viewerLink, "Vic");
  await expect(member.getByTestId("my-role")).toHaveText("member");
  await expect(viewer.getByTestId("my-role")).toHaveText("viewer");
  // Presence shows each person's role.
  await expect(owner.locator('[data-testid="online"] li[data-role="viewer"]')).toContainText("Vic");
  await expect(owner.locator('[data-testid="online"] li[data-role="member"]')).toContainText("Mia");
  // The viewer has no composer and sees no paths.
  await expect(viewer.getByTestId("composer")).toHaveCount(0);
  await expect(viewer.getByTestId("viewer-note")).toBeVisible();
  await expect(viewer.getByTestId("working-dir")).toHaveCount(0);

  // The viewer watches the agent live but has no Stop and no permission buttons.
  await send(owner, "permission");
  await expect(viewer.getByTestId("permission")).toContainText("Run rm -rf build/");
  await expect(viewer.getByTestId("permission-waiting")).toContainText("Allow once");
  await expect(viewer.getByTestId("permission-option")).toHaveCount(0);
  await expect(viewer.getByTestId("turn-status")).toBeVisible();
  await expect(viewer.getByTestId("stop")).toHaveCount(0);
  await expect(member.getByTestId("stop")).toBeVisible();
  await viewer.screenshot({ path: path.join(shots, "trust-viewer.png"), fullPage: true });
  // The same actions through the API get 403, with the viewer's own session.
  for (const [endpoint, data] of [
    ["prompt", { workspaceId: ws, text: "let me in" }],
    ["cancel", { workspaceId: ws }],
    ["permission", { workspaceId: ws, requestId: "any", optionId: "allow" }],
  ] as const) {
    const r = await viewer.request.post(`/api/workspace/${endpoint}`, { data: data });
    expect(r.status(), endpoint).toBe(403);
    expect((await r.json()).code).toBe("forbidden");
  }
  await member.getByTestId("permission-option").filter({ hasText: "Allow once" }).click();
  for (const page of [owner, member, viewer]) {
    await expect(page.getByTestId("permission-resolved")).toHaveText("Mia answered: Allow once");
    await expect(page.getByTestId("agent-message").last()).toContainText("permission: allow");
  }

  // Approvers: once the owner limits answering to them, Mia (not one) cannot answer...
  let reloaded = member.waitForEvent("load"); // Her page reloads: what she may do changed.
  await owner.getByTestId("approvers-only").check();
  await reloaded;
  await expect(member.locator("body[data-hydrated]")).toBeAttached();
  await send(owner, "permission again");
  await expect(member.getByTestId("permission-waiting").last()).toContainText("an approver");
  await expect(member.getByTestId("permission-option")).toHaveCount(0);
  const refused = await member.request.post("/api/workspace/permission", {
    data: { workspaceId: ws, requestId: "any", optionId: "allow" },
  });
  expect(refused.status()).toBe(403);
  // ...until the owner makes her an approver.
  reloaded = member.waitForEvent("load");
  await owner.locator('[data-testid="person-row"][data-name="Mia"] [data-testid="person-approver"]').check();
  await reloaded;
  await expect(member.locator("body[data-hydrated]")).toBeAttached();
  await member.getByTestId("permission-option").filter({ hasText: "Reject" }).click();
  await expect(owner.getByTestId("permission-resolved").last()).toHaveText("Mia answered: Reject");
  await owner.screenshot({ path: path.join(shots, "trust-owner-panel.png"), fullPage: true });

  // A revoked link admits nobody new.
  await owner.locator('[data-testid="invite-row"][data-revoked="false"]').filter({ hasText: "viewer" })
    .getByTestId("revoke-invite").click();
  await expect(owner.locator('[data-testid="invite-row"][data-revoked="true"]')).toHaveCount(1);
  const late = await browser.newContext();
  const latePage = await late.newPage();
  const lateRes = await latePage.goto(viewerLink);
  expect(lateRes?.status()).toBe(403);
  await expect(latePage.getByTestId("link-error")).toContainText("not valid any more");
  expect((await latePage.goto(url))?.status()).toBe(403);
  await late.close();

  // The owner removes the viewer: their page reloads to "ask the owner for an invite".
  await owner.locator('[data-testid="person-row"][data-name="Vic"] [data-testid="remove-person"]').click();
  await expect(viewer.getByTestId("no-access")).toBeVisible();

  // Another person's id and name in a request body change nothing: it is Mia's message.
  const ownerId = (await (await owner.request.post("/api/me", { data: {} })).json()).personId;
  const spoof = await member.request.post("/api/workspace/prompt", {
    data: { workspaceId: ws, userId: ownerId, displayName: "Olga", text: "echo spoofed?" },
  });
  expect(spoof.status()).toBe(200);
  await expect(owner.getByTestId("chat").filter({ hasText: "echo spoofed?" }).getByTestId("author")).toHaveText("Mia");

  // A file the agent writes lands in the workspace's own directory.
  await send(member, "write file");
  const target = path.join(dataDir, "workspaces", ws, "hello.txt");
  await expect(member.getByTestId("agent-message").last()).toContainText(`wrote ${target}`);
  expect(fs.readFileSync(target, "utf8")).toBe("written by the agent\n");
  expect(violations).toEqual([]);
  for (const page of [owner, member, viewer]) await page.context().close();
});

test("another site cannot drive Huddle, and a flood of prompts meets clear limits", async ({ browser, playwright }) => {
  const owner = await operator(browser, "Olga");
  const url = await createRoom(owner, "pi");
  const ws = workspaceId(url);
  // Cross-origin POSTs: text/plain, a form, JSON with a foreign Origin; all refused, even with
  // the owner's cookie.
  const evil = { Origin: "http://evil.example", "Sec-Fetch-Site": "cross-site" };
  const attempts = [
    owner.request.post("/api/workspace/prompt", {
      headers: { ...evil, "Content-Type": "text/plain" },
      data: JSON.stringify({ workspaceId: ws, text: "rm -rf /" }),
    }),
    owner.request.post(`/w/${ws}/send`, { headers: evil, form: { text: "rm -rf /", csrf: "x" } }),
    owner.request.post("/api/workspace/prompt", { headers: evil, data: { workspaceId: ws, text: "rm -rf /" } }),
  ];
  for (const attempt of attempts) {
    const r = await attempt;
    expect(r.status()).toBe(403);
    expect((await r.json()).code).toBe("forbidden");
  }
  // DNS rebinding: a foreign Host gets nothing.
  const rebound = await playwright.request.newContext({ extraHTTPHeaders: { Host: "rebind.evil.example" } });
  const r = await rebound.get(url);
  expect(r.status()).toBe(403);
  await rebound.dispose();
  await expect(owner.getByTestId("chat")).toHaveCount(0);

  // The queue holds 20; the UI says so when it is full. Stop can clear it.
  await send(owner, "slow");
  await expect(owner.getByTestId("turn-status")).toBeVisible();
  for (let i = 1; i <= 20; i++) {
    const q = await owner.request.post("/api/workspace/prompt", { data: { workspaceId: ws, text: `echo ${i}` } });
    expect(q.status()).toBe(200);
  }
  await owner.getByTestId("composer").fill("one more");
  await owner.getByTestId("composer").press("Enter");
  await expect(owner.getByTestId("error")).toContainText("The queue is full");
  await expect(owner.getByTestId("composer")).toHaveValue("one more");
  // Someone's own queued prompt can be taken off the queue.
  await owner.getByTestId("remove-queued").first().click();
  await expect(owner.getByTestId("system").filter({ hasText: "removed a waiting prompt" })).toBeVisible();
  await owner.getByTestId("stop-and-clear").click();
  await expect(owner.getByTestId("system").filter({ hasText: "cleared the queue: 19 prompt(s)" })).toBeVisible();
  await expect(owner.getByTestId("queue")).toBeHidden();
  await expect(owner.getByTestId("turn-status")).toBeHidden();

  // Prompts per person per minute (30), whatever the machine's speed: a flood of 60 at once (for
  // the team only, so the queue plays no part) meets the limit, and what is over it is refused.
  const flood = await Promise.all(
    Array.from({ length: 60 }, (_, i) =>
      owner.request.post("/api/workspace/prompt", { data: { workspaceId: ws, text: `flood ${i}`, teamOnly: true } }),
    ),
  );
  const codes = await Promise.all(flood.map(async (r) => (r.status() === 200 ? "ok" : (await r.json()).code)));
  expect(codes).toContain("rate_limited");
  expect(codes.filter((c) => c !== "ok" && c !== "rate_limited")).toEqual([]);
  // The composer says so and keeps the text. The limiter gives one prompt back every 2 s, so a
  // send may still slip in after a slow step; the flood has left none for the next.
  const composer = owner.getByTestId("composer");
  for (let i = 0; i < 5; i++) {
    await composer.fill("too many");
    await composer.press("Enter");
    await expect
      .poll(
        async () =>
          (await composer.inputValue()) === "" || (await owner.getByTestId("error").allTextContents()).join(" ").includes("too fast"),
      )
      .toBe(true);
    if ((await composer.inputValue()) !== "") break;
  }
  await expect(owner.getByTestId("error")).toContainText("sending prompts too fast");
  await expect(composer).toHaveValue("too many");
  await owner.screenshot({ path: path.join(shots, "trust-flood.png"), fullPage: true });
  await owner.context().close();
});
