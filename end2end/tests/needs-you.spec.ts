import { expect, type Browser, type Page } from "@playwright/test";
import { createRoom, hydrated, inviteLink, operator, rename, send, shots, workspaceId, test } from "./helpers";

/**
 * A teammate whose browser records notifications instead of showing them, asks for the
 * permission only when told, and says whether its tab is in front (`window.__front`).
 */
async function notifiedMember(browser: Browser, link: string, name: string): Promise<Page> {
  const context = await browser.newContext({ viewport: { width: 1100, height: 850 } });
  await context.addInitScript(() => {
    // Not on the new tab's about:blank, which may not read storage (the throw fails the test).
    if (location.protocol !== "http:") return;
    const w = window as unknown as Record<string, unknown>;
    w.__notes = [];
    w.__asked = 0;
    w.__front = true;
    // The browser remembers the answer for the site, as a real one does.
    let permission = localStorage.getItem("__permission") ?? "default";
    class RecordedNotification {
      onclick: unknown = null;
      constructor(title: string, options?: { body?: string; tag?: string }) {
        (w.__notes as unknown[]).push({ title, body: options?.body, tag: options?.tag });
      }
      static get permission() {
        return permission;
      }
      static requestPermission() {
        (w.__asked as number)++;
        permission = "granted";
        localStorage.setItem("__permission", permission);
        return Promise.resolve(permission);
      }
    }
    w.Notification = RecordedNotification;
    Object.defineProperty(document, "hidden", { get: () => !w.__front });
    document.hasFocus = () => w.__front as boolean;
  });
  const page = await context.newPage();
  page.on("pageerror", (e) => console.log(`[${name}] page error: ${e.message}`));
  await page.goto("/");
  await rename(page, name);
  await page.goto(link);
  await expect(page).toHaveURL(/\/w\/[0-9a-f]{32}$/);
  await hydrated(page);
  return page;
}

const notes = (page: Page) =>
  page.evaluate(() => (window as unknown as { __notes: { title: string; tag: string }[] }).__notes);
const setFront = (page: Page, front: boolean) =>
  page.evaluate((f) => ((window as unknown as { __front: boolean }).__front = f), front);

/** A new thread of the workspace, made through the API; its URL. */
async function newThread(page: Page, ws: string, title: string): Promise<string> {
  const res = await page.request.post("/api/workspace/threads/create", { data: { workspaceId: ws, agent: "pi", title } });
  expect(res.ok(), await res.text()).toBeTruthy();
  return (await res.json()).url;
}

test("what needs you: the inbox live across pages, answered from there, mentions and notifications", async ({ browser }) => {
  test.setTimeout(180_000);
  const ada = await operator(browser, "Ada");
  const url = await createRoom(ada);
  const ws = workspaceId(url);
  const bob = await notifiedMember(browser, await inviteLink(ada, url, "member"), "Bob");

  // Bob on the home page: nothing waits on him. Huddle asks for the notification permission only
  // when he clicks "Notify me".
  await bob.goto("/");
  await hydrated(bob);
  await expect(bob.getByTestId("inbox-empty")).toBeVisible();
  expect(await bob.evaluate(() => (window as unknown as { __asked: number }).__asked)).toBe(0);
  await bob.getByTestId("notify-me").click();
  await expect(bob.getByTestId("notify-on")).toBeVisible();
  expect(await bob.evaluate(() => (window as unknown as { __asked: number }).__asked)).toBe(1);

  // His tab goes to the background. The agent asks permission in Ada's room: it shows in his
  // inbox without a reload, with the tab's count, and raises one notification.
  await setFront(bob, false);
  const asked = Date.now();
  await send(ada, "permission");
  const item = bob.getByTestId("inbox-item");
  await expect(item).toHaveCount(1);
  const toInbox = Date.now() - asked;
  await expect(item).toHaveAttribute("data-kind", "permission");
  await expect(item).toContainText("Run rm -rf build/");
  await expect(bob).toHaveTitle("(1) Huddle");
  await expect(bob.locator("link[rel='icon']")).toHaveAttribute("data-count", "1");
  await expect.poll(() => notes(bob)).toHaveLength(1);
  expect((await notes(bob))[0].title).toContain("asks permission");
  await bob.screenshot({ path: `${shots}/needs-you-inbox.png` });

  // He answers it from there; Ada's room goes on with his answer, and it leaves his inbox.
  await item.getByTestId("inbox-choice").filter({ hasText: "Allow once" }).click();
  await expect(ada.getByTestId("agent-message").last()).toContainText("permission: allow");
  await expect(ada.getByTestId("permission-resolved")).toHaveText("Bob answered: Allow once");
  await expect(bob.getByTestId("inbox-empty")).toBeVisible();
  await expect(bob).toHaveTitle("Huddle");

  // In another thread Ada mentions him, picking his name as she types.
  const second = await newThread(ada, ws, "Review");
  await ada.goto(second);
  await hydrated(ada);
  await expect(ada.getByTestId("reconnecting")).toBeHidden();
  await ada.getByTestId("team-only").check();
  await ada.getByTestId("composer").pressSequentially("have a look @Bo");
  await expect(ada.getByTestId("mention-option")).toHaveText(["@Bob"]);
  await ada.getByTestId("composer").press("Enter");
  await expect(ada.getByTestId("composer")).toHaveValue("have a look @Bob ");
  await ada.getByTestId("composer").press("Enter");
  await expect(ada.getByTestId("mention").last()).toHaveText("@Bob");
  const mention = bob.getByTestId("inbox-item");
  await expect(mention).toHaveCount(1);
  await expect(mention).toHaveAttribute("data-kind", "mention");
  await expect(mention).toContainText("Ada mentioned you");
  await expect.poll(() => notes(bob)).toHaveLength(2);
  expect((await notes(bob))[1].title).toContain("Ada mentioned you");

  // The link opens the message, highlighted for him; having seen it, it leaves the inbox.
  await mention.locator("a").click();
  await hydrated(bob);
  await expect(bob).toHaveURL(/#seq-\d+$/);
  await expect(bob.locator(".row.linked")).toBeInViewport();
  await expect(bob.locator(".msg.mentions-me")).toBeVisible();
  await expect(bob.getByTestId("threads").getByTestId("inbox")).toHaveCount(0);

  // The thread he is looking at raises no notification, even with his tab behind another.
  await setFront(bob, false);
  await ada.getByTestId("team-only").uncheck();
  await send(ada, "permission");
  await expect(bob.getByTestId("permission-option")).toHaveCount(2);
  await expect(bob.getByTestId("threads").getByTestId("inbox-item")).toHaveCount(1);
  // A notification would have been raised when the inbox learned of the item (above); this
  // page's record started empty when it opened.
  expect(await notes(bob)).toHaveLength(0);
  // The same page does notify of another thread: a mention there (sent through the API).
  const bobId = (await (await bob.request.post("/api/me", { data: {} })).json()).personId;
  const third = await newThread(ada, ws, "Third");
  const threadId = third.split("/t/")[1];
  const res = await ada.request.post("/api/workspace/prompt", {
    data: { workspaceId: ws, threadId, text: "@Bob over here", teamOnly: true, mentions: [bobId] },
  });
  expect(res.ok(), await res.text()).toBeTruthy();
  await expect.poll(() => notes(bob)).toHaveLength(1);
  expect((await notes(bob))[0].tag).toBe(threadId);
  console.log(`needs you: a permission request showed in another browser's inbox ${toInbox} ms after it was sent`);
  await ada.getByTestId("permission-option").filter({ hasText: "Allow once" }).click();
  await expect(bob.getByTestId("threads").getByTestId("inbox-item")).toHaveCount(1);
});
