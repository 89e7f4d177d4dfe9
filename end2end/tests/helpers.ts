import { test as base, expect, type Browser, type BrowserContext, type Page } from "@playwright/test";
import * as fs from "node:fs";
import * as path from "node:path";

/**
 * Every test fails when a page it opened threw (a WebAssembly panic among them: it prints its
 * message as a console error, then throws). The browser contexts the tests open are watched.
 */
export const test = base.extend<{ pageErrors: void }>({
  pageErrors: [
    async ({ browser }, use) => {
      const errors: string[] = [];
      const watch = (context: BrowserContext) => {
        context.on("weberror", (e) => errors.push(e.error().message));
        context.on("console", (m) => {
          if (m.type() === "error" && m.text().includes("panicked")) console.log(`page console: ${m.text()}`);
        });
      };
      const newContext = browser.newContext;
      browser.newContext = async (options) => {
        const context = await newContext.call(browser, options);
        watch(context);
        return context;
      };
      await use();
      browser.newContext = newContext;
      expect(errors, "errors thrown in the pages").toEqual([]);
    },
    { auto: true },
  ],
});

export const shots = path.join(__dirname, "..", "artifacts");
fs.mkdirSync(shots, { recursive: true });

/** Huddle's data directory in these tests (set by playwright.config.ts). */
export const dataDir = process.env.HUDDLE_E2E_DATA_DIR as string;

/** For scripts: a bearer token with the instance owner's rights. */
export const admin = { Authorization: `Bearer ${process.env.HUDDLE_E2E_ADMIN_TOKEN}` };

/** This run's sign-in link, as Huddle wrote it to `<data dir>/sign-in-link`. */
export function signInLink(): string {
  return fs.readFileSync(path.join(dataDir, "sign-in-link"), "utf8").trim();
}

export async function hydrated(page: Page) {
  await expect(page.locator("body[data-hydrated]")).toBeAttached();
}

async function newPage(browser: Browser, name: string): Promise<Page> {
  const context = await browser.newContext({ viewport: { width: 1100, height: 850 } });
  const page = await context.newPage();
  page.on("pageerror", (e) => console.log(`[${name}] page error: ${e.message}`));
  return page;
}

/** Changes one's display name with the name tag (on the home page or in a room). */
export async function rename(page: Page, name: string) {
  await hydrated(page);
  await page.getByTestId("rename").click();
  await page.getByTestId("name-input").fill(name);
  await page.getByTestId("save-name").click();
  await expect(page.getByTestId("my-name")).toHaveText(name);
}

/** A browser that opened the operator's sign-in link: the instance owner, named. */
export async function operator(browser: Browser, name: string): Promise<Page> {
  const page = await newPage(browser, name);
  await page.goto(signInLink());
  await expect(page).toHaveURL(/\/$/);
  await rename(page, name);
  return page;
}

/** Creates a workspace as this page's person (who owns it) and opens it. */
export async function createRoom(page: Page, agent = "pi"): Promise<string> {
  const res = await page.request.post("/api/workspace/create", { data: { agent } });
  expect(res.ok(), await res.text()).toBeTruthy();
  const { url } = await res.json();
  await page.goto(url);
  await hydrated(page);
  await expect(page.getByTestId("reconnecting")).toBeHidden();
  return page.url();
}

export const workspaceId = (url: string) => url.split("/w/")[1];

/** An invite link for a role, made through the API by the room's owner. */
export async function inviteLink(owner: Page, url: string, role: "member" | "viewer"): Promise<string> {
  const res = await owner.request.post("/api/workspace/invite", {
    data: { workspaceId: workspaceId(url), role },
  });
  expect(res.ok(), await res.text()).toBeTruthy();
  return (await res.json()).url;
}

/** A teammate: a fresh browser that picks a name, then opens an invite link into the room. */
export async function join(browser: Browser, link: string, name: string): Promise<Page> {
  const page = await newPage(browser, name);
  await page.goto("/");
  await rename(page, name);
  await page.goto(link);
  await expect(page).toHaveURL(/\/w\/[0-9a-f]{32}$/);
  await hydrated(page);
  await expect(page.getByTestId("reconnecting")).toBeHidden();
  return page;
}

/** The owner and a member who joined by a member link. */
export async function ownerAndMember(browser: Browser, agent = "pi"): Promise<[Page, Page]> {
  const ada = await operator(browser, "Ada");
  const url = await createRoom(ada, agent);
  const bob = await join(browser, await inviteLink(ada, url, "member"), "Bob");
  return [ada, bob];
}

export async function send(page: Page, text: string) {
  await page.getByTestId("composer").fill(text);
  await page.getByTestId("composer").press("Enter");
  await expect(page.getByTestId("composer")).toHaveValue("");
}

export const chatTexts = (page: Page) => page.locator('[data-testid="chat"] .text').allTextContents();
