import { defineConfig } from "@playwright/test";
import base from "./playwright.config";

// The long-room benchmark: the release build (`cargo leptos build --release`), in Chromium.
// Run by scripts/bench.sh; it prints its figures and asserts nothing about time.
export default defineConfig({
  ...base,
  testDir: "./bench",
  testMatch: "*.bench.ts",
  timeout: 900_000,
  webServer: { ...base.webServer, command: "./target/release/huddle" } as typeof base.webServer,
});
