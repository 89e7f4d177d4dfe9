import { expect, type Page } from "@playwright/test";
import { createRoom, hydrated, inviteLink, join, operator, send, shots, workspaceId, test } from "./helpers";

/** A thread's row in this page's thread list. */
const row = (page: Page, title: string) => page.getByTestId("thread").filter({ hasText: title });

test("two threads work at once, live in every list, with unread counts, a fork and exports", async ({ browser }) => {
  test.setTimeout(180_000);
  const ada = await operator(browser, "Ada");
  const url = await createRoom(ada);
  const ws = workspaceId(url);
  const bob = await join(browser, await inviteLink(ada, url, "member"), "Bob");
  const vera = await join(browser, await inviteLink(ada, url, "viewer"), "Vera");

  // The workspace's conversation is its first thread; Bob names it.
  await expect(bob.getByTestId("thread")).toHaveCount(1);
  await bob.getByTestId("thread").getByTestId("rename-thread").click();
  await bob.getByTestId("thread-name").fill("Plan the release");
  await bob.getByTestId("save-thread-name").click();
  await expect(row(ada, "Plan the release")).toBeVisible();

  // Ada starts a second thread; it shows in everyone's list without a reload.
  await ada.getByTestId("new-thread").click();
  await ada.getByTestId("new-thread-name").fill("Fix the login");
  await ada.getByTestId("new-thread-agent").selectOption("pi");
  await ada.getByTestId("create-thread").click();
  await expect(ada).toHaveURL(new RegExp(`/w/${ws}/t/[0-9a-f]{32}$`));
  await hydrated(ada);
  await expect(ada.getByTestId("reconnecting")).toBeHidden();
  await expect(row(bob, "Fix the login")).toBeVisible();
  await expect(row(vera, "Fix the login")).toBeVisible();
  await expect(vera.getByTestId("new-thread")).toHaveCount(0);

  // Turns in both threads at once: Bob's in the first, Ada's (the agent in its Claude shape)
  // in the second, which asks permission.
  // It streams until Bob stops it, however slow the machine.
  await send(bob, "pace 100000 20");
  await expect(row(ada, "Plan the release").getByTestId("thread-status")).toHaveText("working for Bob");
  await send(ada, "claude permission");
  await expect(row(bob, "Fix the login").getByTestId("thread-status")).toHaveText("needs an answer");
  await expect(row(bob, "Plan the release").getByTestId("thread-status")).toHaveText("working for Bob");
  await ada.screenshot({ path: `${shots}/threads-two-working.png` });

  // Bob, looking at the first thread, answers from the second.
  await bob.getByTestId("stop").click();
  await expect(row(bob, "Plan the release").getByTestId("thread-status")).toHaveText("idle");
  await row(bob, "Fix the login").locator("a").click();
  await expect(bob).toHaveURL(ada.url());
  await hydrated(bob);
  await bob.getByTestId("permission").last().getByTestId("permission-option").filter({ hasText: /^Allow$/ }).click();
  await expect(bob.getByTestId("agent-message").last()).toContainText("claude: allow");
  await expect(row(ada, "Fix the login").getByTestId("thread-status")).toHaveText("idle");
  await expect(row(vera, "Fix the login").getByTestId("thread-status")).toHaveText("idle");

  // Ada has the first thread's messages unread; the count survives a reload.
  const adaUnread = row(ada, "Plan the release").getByTestId("unread");
  await expect(adaUnread).toBeVisible();
  const before = Number(await adaUnread.textContent());
  expect(before).toBeGreaterThanOrEqual(2);
  await ada.reload();
  await hydrated(ada);
  await expect(row(ada, "Plan the release").getByTestId("unread")).toHaveText(String(before));
  // Reading it clears it, for Ada only: the read position is kept on the server.
  await row(ada, "Plan the release").locator("a").click();
  await hydrated(ada);
  await expect(ada.getByTestId("reconnecting")).toBeHidden();
  const unreadOf = async (page: Page, title: string) => {
    const res = await page.request.post("/api/workspace/threads", { data: { workspaceId: ws } });
    const { threads } = await res.json();
    return threads.find((t: { title: string }) => t.title === title).unread;
  };
  await expect.poll(() => unreadOf(ada, "Plan the release")).toBe(0);
  await row(ada, "Fix the login").locator("a").click();
  await hydrated(ada);
  await expect(row(ada, "Plan the release").getByTestId("unread")).toHaveCount(0);

  // A fork from a message carries the conversation up to it.
  await send(ada, "remember pelican");
  await expect(ada.getByTestId("agent-message").last()).toContainText("You said: remember pelican");
  await ada.getByTestId("agent-message").last().getByTestId("fork").click();
  await expect(ada).toHaveURL(new RegExp(`/w/${ws}/t/[0-9a-f]{32}$`));
  await hydrated(ada);
  await expect(ada.getByTestId("reconnecting")).toBeHidden();
  await expect(ada.getByTestId("timeline")).toContainText("continued “Fix the login”");
  await send(ada, "hello");
  await expect(ada.getByTestId("agent-message").last()).toContainText("You said: hello");
  await send(ada, "recall");
  await expect(ada.getByTestId("agent-message").last()).toContainText("remember pelican");

  // Exports of the second thread hold its messages, the question and who answered it.
  await row(ada, "Fix the login").locator("a").click();
  await hydrated(ada);
  const md = await (await ada.request.get(await ada.getByTestId("export-md").getAttribute("href") as string)).text();
  expect(md).toContain("claude permission");
  expect(md).toContain("**Bob** answered");
  expect(md).toContain("claude: allow");
  const jsonl = await (await vera.request.get(await ada.getByTestId("export-jsonl").getAttribute("href") as string)).text();
  const lines = jsonl.trim().split("\n").map((l) => JSON.parse(l));
  expect(lines.some((l) => l.kind === "permission.answered" && l.author.startsWith("Bob"))).toBeTruthy();

  // The viewer saw all of it and can act in none.
  await row(vera, "Fix the login").locator("a").click();
  await hydrated(vera);
  await expect(vera.getByTestId("agent-message").last()).toContainText("remember pelican");
  await expect(vera.getByTestId("composer")).toHaveCount(0);
  await expect(vera.getByTestId("fork")).toHaveCount(0);
  await vera.screenshot({ path: `${shots}/threads-viewer.png` });
});
