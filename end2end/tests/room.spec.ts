import { expect } from "@playwright/test";
import * as path from "node:path";
import { chatTexts, createRoom, inviteLink, join, operator, ownerAndMember, send, shots, test } from "./helpers";

test("two teammates see each other's messages and the agent's reply live; reload keeps the history", async ({
  browser,
}) => {
  const [ada, bob] = await ownerAndMember(browser);
  await expect(ada.getByTestId("online")).toContainText("Bob");
  await expect(bob.getByTestId("online")).toContainText("Ada");

  await send(ada, "tools");
  for (const page of [ada, bob]) {
    await expect(page.getByTestId("chat").filter({ hasText: "tools" })).toContainText("Ada");
    await expect(page.getByTestId("tool-call")).toContainText("Edit src/main.rs");
    await expect(page.getByTestId("tool-call")).toHaveAttribute("data-status", "completed");
    await expect(page.getByTestId("diff")).toContainText("+ let x = 2;");
    await expect(page.getByTestId("diff-line")).toHaveCount(2);
    await expect(page.getByTestId("plan")).toContainText("Fix the bug");
    await expect(page.getByTestId("thought")).toContainText("Thinking");
    // The reply is one message, rendered from markdown once the turn ends.
    await expect(page.getByTestId("agent-message").locator(".markdown strong")).toHaveText("the bug");
  }
  await send(bob, "stream 40");
  await expect(ada.getByTestId("agent-message").last()).toContainText("chunk 39");
  await expect(ada.getByTestId("agent-message")).toHaveCount(2);
  await ada.screenshot({ path: path.join(shots, "room-two-teammates.png"), fullPage: true });

  await bob.reload();
  await expect(bob.locator("body[data-hydrated]")).toBeAttached();
  expect(await chatTexts(bob)).toEqual(["tools", "stream 40"]);
  await expect(bob.getByTestId("agent-message")).toHaveCount(2);
  await expect(bob.getByTestId("agent-message").first().locator(".markdown strong")).toHaveText("the bug");
  await ada.context().close();
  await bob.context().close();
});

test("a permission answered by one teammate shows resolved for the other", async ({ browser }) => {
  const [ada, bob] = await ownerAndMember(browser);
  await send(ada, "permission");
  await expect(bob.getByTestId("permission")).toContainText("Run rm -rf build/");
  await expect(ada.getByTestId("permission-option")).toHaveCount(2);
  await bob.screenshot({ path: path.join(shots, "room-permission-asked.png"), fullPage: true });
  // The dock says the agent waits, wherever the question scrolled to, and leads back to it.
  await ada.evaluate(() => window.scrollTo(0, 0));
  await ada.getByTestId("waiting-for-answer").click();
  await expect(ada.getByTestId("permission")).toBeInViewport();
  // A card waiting for its answer shows no empty terminal.
  await expect(bob.getByTestId("terminal")).toHaveCount(0);
  await bob.getByTestId("permission-option").filter({ hasText: "Allow once" }).click();
  await expect(ada.getByTestId("waiting-for-answer")).toBeHidden();
  for (const page of [ada, bob]) {
    await expect(page.getByTestId("permission-resolved")).toHaveText("Bob answered: Allow once");
    await expect(page.getByTestId("permission-option")).toHaveCount(0);
    await expect(page.getByTestId("agent-message").last()).toContainText("permission: allow");
  }
  await ada.screenshot({ path: path.join(shots, "room-permission-resolved.png"), fullPage: true });
  await ada.context().close();
  await bob.context().close();
});

test("Stop cancels a running turn, and queued prompts wait their turn", async ({ browser }) => {
  const [ada, bob] = await ownerAndMember(browser);
  await send(ada, "slow");
  await expect(bob.getByTestId("turn-status")).toContainText("Agent is working for Ada");
  await send(bob, "stream 3");
  await expect(ada.getByTestId("queue")).toContainText("Bob: stream 3");
  await ada.screenshot({ path: path.join(shots, "room-working-with-queue.png"), fullPage: true });
  await bob.getByTestId("stop").click();
  await expect(ada.getByTestId("system").filter({ hasText: "Bob stopped the agent." })).toBeVisible();
  await expect(ada.getByTestId("system").filter({ hasText: "The turn was cancelled." })).toBeVisible();
  // The queued prompt runs next, in the same session.
  await expect(ada.getByTestId("agent-message").last()).toContainText("chunk 2");
  await expect(ada.getByTestId("turn-status")).toBeHidden();
  await expect(ada.getByTestId("queue")).toBeHidden();
  await ada.context().close();
  await bob.context().close();
});

test("a teammate who goes offline comes back with nothing missing and nothing doubled", async ({ browser }) => {
  const [ada, bob] = await ownerAndMember(browser, "mock");
  await send(ada, "one");
  await expect(bob.getByTestId("chat")).toHaveCount(1);

  await bob.context().setOffline(true);
  await expect(bob.getByTestId("reconnecting")).toBeVisible();
  await expect(bob.getByTestId("send")).toBeDisabled();
  await bob.screenshot({ path: path.join(shots, "room-reconnecting.png"), fullPage: true });
  for (const text of ["two", "three", "four"]) await send(ada, text);
  await bob.context().setOffline(false);
  await expect(bob.getByTestId("reconnecting")).toBeHidden({ timeout: 30_000 });
  await expect(bob.getByTestId("chat")).toHaveCount(4);
  expect(await chatTexts(bob)).toEqual(["one", "two", "three", "four"]);
  expect(await chatTexts(ada)).toEqual(["one", "two", "three", "four"]);
  // The mock agent's echoes have no view of their own: compact rows that open to JSON.
  const raw = bob.getByTestId("raw").first();
  await expect(raw).toContainText("mock/echo");
  await raw.locator("summary").click();
  await expect(raw.locator("pre")).toContainText('"jsonrpc"');
  await ada.context().close();
  await bob.context().close();
});

test("HTML in names, prompts and the agent's markdown shows as text and runs nothing", async ({ browser }) => {
  const evilName = '<img src=x onerror="window.__xss=1">';
  const ada = await operator(browser, evilName);
  const bob = await join(browser, await inviteLink(ada, await createRoom(ada), "member"), "Bob");
  await send(ada, "<script>window.__xss=2</script> hello");
  await send(ada, "markdown");
  for (const page of [ada, bob]) {
    await expect(page.getByTestId("author").first()).toHaveText(evilName);
    await expect(page.getByTestId("chat").first().locator(".text")).toHaveText("<script>window.__xss=2</script> hello");
    const md = page.getByTestId("agent-message").last().locator(".markdown");
    await expect(md.locator("h1")).toHaveText("Title");
    await expect(md.locator("pre code")).toContainText("fn main() {}");
    await expect(md.locator("script")).toHaveCount(0);
    await expect(md.locator("[onerror]")).toHaveCount(0);
    // Tables have borders and quotes a bar: they read as such, not as plain text.
    expect(await md.locator("td").first().evaluate((el) => getComputedStyle(el).borderTopStyle)).toBe("solid");
    expect(await md.locator("blockquote").evaluate((el) => getComputedStyle(el).borderLeftStyle)).toBe("solid");
  }
  await bob.reload();
  await expect(bob.getByTestId("author").first()).toHaveText(evilName);
  for (const page of [ada, bob]) {
    expect(await page.evaluate(() => (window as unknown as { __xss?: number }).__xss)).toBeUndefined();
  }
  await ada.screenshot({ path: path.join(shots, "room-xss-as-text.png"), fullPage: true });
  await ada.context().close();
  await bob.context().close();
});

test("the composer works before hydration, and the home page lists agents and your rooms", async ({ browser }) => {
  const ada = await operator(browser, "Ada");
  const url = await createRoom(ada, "mock");
  const link = await inviteLink(ada, url, "member");
  // A member with WebAssembly off: the invite link and the composer are plain links and forms
  // (the form carries its CSRF token).
  const noJs = await browser.newContext({ javaScriptEnabled: false });
  const page = await noJs.newPage();
  await page.goto(link);
  await page.waitForURL(url);
  await page.getByTestId("composer").fill("sent without wasm");
  await page.getByTestId("send").click();
  await page.waitForURL(url);
  await expect(page.getByTestId("chat")).toContainText("sent without wasm");
  await noJs.close();

  await expect(ada.getByTestId("chat")).toContainText("sent without wasm");
  await ada.goto("/");
  await expect(ada.locator("#agent option[value=mock]")).toHaveCount(1);
  await expect(ada.locator("#agent option[value=pi]")).toHaveCount(1);
  await expect(ada.getByTestId("my-workspaces")).toContainText("mock");
  await expect(ada.getByTestId("my-workspaces")).toContainText("owner");
  await ada.screenshot({ path: path.join(shots, "home.png"), fullPage: true });
  await ada.setViewportSize({ width: 390, height: 800 });
  await ada.goto(url);
  await expect(ada.getByTestId("chat")).toContainText("sent without wasm");
  await ada.screenshot({ path: path.join(shots, "room-phone.png"), fullPage: true });
  await ada.context().close();
});

test("typing, and the unread count in a hidden tab", async ({ browser }) => {
  const [ada, bob] = await ownerAndMember(browser, "mock");
  await ada.getByTestId("composer").pressSequentially("hel");
  await expect(bob.getByTestId("typing")).toHaveText("Ada is typing…");

  // Bob's tab goes to the background; what happens meanwhile shows in its title.
  await bob.evaluate(() => {
    Object.defineProperty(document, "hidden", { configurable: true, get: () => true });
    document.dispatchEvent(new Event("visibilitychange", { bubbles: true }));
  });
  await send(ada, "are you there?");
  // Ada's message, and the agent's turn that it started ending.
  await expect(bob).toHaveTitle(/^\(2\) Workspace \w{6} · Huddle$/);
  await bob.evaluate(() => {
    Object.defineProperty(document, "hidden", { configurable: true, get: () => false });
    document.dispatchEvent(new Event("visibilitychange", { bubbles: true }));
  });
  await expect(bob).toHaveTitle(/^Workspace \w{6} · Huddle$/);
  await expect(bob.getByTestId("typing")).toHaveText("");

  const dark = await browser.newContext({ colorScheme: "dark", viewport: { width: 1100, height: 700 } });
  const page = await dark.newPage();
  await page.goto(await inviteLink(ada, ada.url(), "viewer"));
  await expect(page.getByTestId("chat")).toHaveCount(1);
  await page.screenshot({ path: path.join(shots, "room-dark.png"), fullPage: true });
  await dark.close();
  await ada.context().close();
  await bob.context().close();
});
