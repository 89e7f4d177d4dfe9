import { expect } from "@playwright/test";
import * as path from "node:path";
import { ownerAndMember, send, shots, test } from "./helpers";

test("the agent's controls, its true turn order, and talk for the team only", async ({ browser }) => {
  const [ada, bob] = await ownerAndMember(browser, "pi");
  // The room opened the agent's session for its first person: its pickers are there before the
  // first prompt.
  await expect(bob.getByTestId("option-model")).toBeVisible();
  await send(ada, "hello there");
  // The session's title and its context use show with the room, not as rows.
  for (const page of [ada, bob]) {
    await expect(page.getByTestId("session-title")).toHaveText("hello there");
    await expect(page.getByTestId("usage")).toContainText("Context 1.0k / 200.0k");
    await expect(page.getByTestId("raw")).toHaveCount(0);
  }

  // "/" lists the agent's slash commands; picking one fills the composer.
  await bob.getByTestId("composer").fill("/");
  await bob.getByTestId("composer").press("End");
  await bob.getByTestId("composer").pressSequentially("r");
  await expect(bob.getByTestId("command")).toHaveCount(1);
  await expect(bob.getByTestId("palette")).toContainText("Review the changes so far");
  await bob.getByTestId("command").click();
  await expect(bob.getByTestId("composer")).toHaveValue("/review ");
  // All 14 commands: the palette fits between the header and the composer, scrolls, and works
  // from the keyboard (↑ ↓ choose, Enter takes, Esc closes).
  const composer = bob.getByTestId("composer");
  await composer.fill("/");
  const palette = bob.getByTestId("palette");
  await expect(bob.getByTestId("command")).toHaveCount(14);
  const box = (await palette.boundingBox())!;
  const header = (await bob.locator(".room-header").boundingBox())!;
  const viewport = bob.viewportSize()!;
  expect(box.y).toBeGreaterThanOrEqual(header.y + header.height);
  expect(box.y + box.height).toBeLessThanOrEqual(viewport.height);
  expect(await palette.evaluate((el) => el.scrollHeight > el.clientHeight)).toBe(true);
  await composer.press("ArrowUp");
  const last = bob.getByTestId("command").last();
  await expect(last).toHaveClass(/active/);
  await expect(last).toBeInViewport();
  await composer.press("Enter");
  await expect(composer).toHaveValue("/update-config ");
  await composer.fill("/");
  await composer.press("ArrowDown");
  await expect(bob.getByTestId("command").nth(1)).toHaveClass(/active/);
  await composer.press("Escape");
  await expect(palette).toBeHidden();
  await expect(composer).toHaveValue("/");
  await bob.getByTestId("composer").fill("");

  // The model and mode are the room's: Bob changes them, Ada sees it, and the log says who.
  await bob.getByTestId("option-model").selectOption("smart");
  await expect(ada.getByTestId("option-model")).toHaveValue("smart");
  await expect(ada.getByTestId("system").filter({ hasText: "Bob set the agent's model to smart." })).toBeVisible();
  await bob.getByTestId("option-_mode").selectOption("plan");
  await expect(ada.getByTestId("option-_mode")).toHaveValue("plan");

  // Leaving plan mode, as Claude asks it: the plan shows as markdown in the card, its choices are
  // changes of mode (no "always"), and the answer sets the room's mode.
  await send(ada, "claude plan");
  const card = bob.getByTestId("permission").last();
  await expect(card).toHaveAttribute("data-kind", "switch_mode");
  await expect(card.locator("h3")).toHaveText("The agent asks to leave plan mode: Ready to code?");
  await expect(card.locator(".permission-text h2")).toHaveText("Release");
  await expect(card.locator(".permission-text strong")).toHaveText("typo");
  await expect(card.locator(".kind")).toHaveCount(0);
  await card.screenshot({ path: path.join(shots, "agent-plan.png") });
  await card.getByTestId("permission-option").filter({ hasText: "manually approve" }).click();
  await expect(ada.getByTestId("option-_mode")).toHaveValue("default");
  await expect(ada.getByTestId("agent-message").last()).toContainText("plan: default");

  // What the agent did, in the order it did it: its words after the edit come below the card.
  await send(ada, "tools");
  await expect(ada.getByTestId("tool-call").last()).toHaveAttribute("data-status", "completed");
  await expect(ada.getByTestId("agent-message").last().locator(".markdown strong")).toHaveText("the bug");
  const order = await ada.locator('[data-testid="timeline"] > .row > *').evaluateAll((rows) =>
    rows.map((r) => r.getAttribute("data-testid")).filter((t) => ["thought", "plan", "tool-call", "agent-message"].includes(t ?? "")),
  );
  expect(order.slice(-4)).toEqual(["thought", "plan", "tool-call", "agent-message"]);

  // A "Thinking" row opened while the agent streams into it stays open.
  await send(ada, "ponder");
  const thinking = bob.getByTestId("thought").last();
  await expect(thinking).toContainText("thought 3");
  await thinking.locator("summary").click();
  await expect(thinking).toContainText("thought 39");
  await expect(thinking).toHaveAttribute("open", "");
  await expect(bob.getByTestId("agent-message").last()).toContainText("Pondered.");
  await expect(thinking).toHaveAttribute("open", "");

  // Team-only talk starts no turn; the agent gets it with the next prompt.
  await bob.getByTestId("team-only").check();
  await send(bob, "let's keep sqlite");
  await expect(ada.getByTestId("chat").filter({ hasText: "let's keep sqlite" }).getByTestId("team-only-badge")).toBeVisible();
  await expect(ada.getByTestId("turn-status")).toBeHidden();
  await send(ada, "echo");
  await expect(ada.getByTestId("agent-message").last()).toContainText("Bob: let's keep sqlite");
  await expect(ada.getByTestId("agent-message").last()).toContainText("Ada says");

  // A pasted image goes with the message: the agent gets it as an image block, and the room shows it.
  await bob.getByTestId("team-only").uncheck();
  const png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
  await bob.evaluate((data) => {
    const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
    const transfer = new DataTransfer();
    transfer.items.add(new File([bytes], "dot.png", { type: "image/png" }));
    const paste = new ClipboardEvent("paste", { clipboardData: transfer, bubbles: true, cancelable: true });
    document.querySelector('[data-testid="composer"]')!.dispatchEvent(paste);
  }, png);
  await expect(bob.getByTestId("attachments").locator("img")).toHaveCount(1);
  await send(bob, "look at this");
  await expect(bob.getByTestId("attachments")).toHaveCount(0);
  await expect(ada.getByTestId("agent-message").last()).toContainText("I see 1 image(s): image/png 70 bytes.");
  const shown = ada.getByTestId("chat-image").last();
  await expect(shown).toBeVisible();
  expect(await shown.evaluate((img) => (img as HTMLImageElement).naturalWidth)).toBe(1);
  await ada.screenshot({ path: path.join(shots, "agent-controls.png"), fullPage: true });
  await ada.context().close();
  await bob.context().close();
});
