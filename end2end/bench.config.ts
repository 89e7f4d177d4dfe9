import { defineConfig } from "@playwright/test";
import base from "./playwright.config";

// The long-room benchmark: the release build (`cargo leptos build --release`), in Chromium.
// Run by scripts/bench.sh; it prints its figures and asserts nothing about time.
export default defineConfig({
  ...base,
  testDir: "./bench",
  testMatch: "*.bench.ts",
  timeout: 900_000,
  webServer: {
    ...base.webServer,
    command: "./target/release/huddle",
    // The benchmarks prompt as one script, far faster than people do.
    env: { ...(base.webServer as { env: Record<string, string> }).env, HUDDLE_PROMPTS_PER_MINUTE: "100000", HUDDLE_MAX_QUEUE: "1000" },
  } as typeof base.webServer,
});
