import { expect } from "@playwright/test";
import { createRoom, hydrated, operator, send, test } from "./helpers";

test("the room says where its agent runs; its owner deletes it after typing its name", async ({ browser }) => {
  const page = await operator(browser, "Ada");
  const url = await createRoom(page);
  const id = url.split("/w/")[1];
  // Its own bubblewrap sandbox on this machine, named in the header (never a token).
  const sandbox = page.getByTestId("sandbox");
  await expect(sandbox).toHaveAttribute("data-provider", "local");
  await expect(sandbox).toContainText(/sbx_[0-9a-z]{12}/);
  await expect(page.getByTestId("not-sandboxed")).toHaveCount(0);
  await hydrated(page);
  await send(page, "shell echo from the sandbox > made.txt && cat made.txt");
  await expect(page.getByTestId("agent-message").last()).toContainText("from the sandbox");

  // The owner deletes it: nothing happens until its name is typed.
  await page.getByTestId("manage").click();
  await page.getByTestId("delete-workspace").click();
  const forGood = page.getByTestId("delete-for-good");
  await expect(forGood).toBeDisabled();
  await page.getByTestId("delete-name").fill("not its name");
  await expect(forGood).toBeDisabled();
  const name = (await page.getByTestId("workspace-name").textContent()) ?? "";
  await page.getByTestId("delete-name").fill(name);
  await expect(forGood).toBeEnabled();
  await forGood.click();
  await page.waitForURL(/\/$/);
  await expect(page.getByTestId("my-workspace").filter({ hasText: name })).toHaveCount(0);
  const gone = await page.request.post("/api/workspace/info", { data: { workspaceId: id } });
  expect(gone.status()).toBe(404);
  await page.close();
});
