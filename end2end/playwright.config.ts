import { defineConfig } from "@playwright/test";
import * as os from "node:os";
import * as path from "node:path";

const port = Number(process.env.HUDDLE_E2E_PORT ?? 3100);
const baseURL = `http://127.0.0.1:${port}`;
// Set here so that the test workers (which inherit the runner's environment) read the same values:
// tests read the sign-in link from the data directory, and scripts use the admin token.
process.env.HUDDLE_E2E_DATA_DIR ??= path.join(os.tmpdir(), `huddle-e2e-${process.pid}`);
process.env.HUDDLE_E2E_ADMIN_TOKEN ??= `e2e-admin-${process.pid}-${Date.now()}`;
// The app runs on its embedded defaults: its own Postgres and its own sandbox-agent.
const env: Record<string, string> = {};
for (const [k, v] of Object.entries(process.env)) {
  if (v !== undefined && !["DATABASE_URL", "SANDBOX_AGENT_URL", "SANDBOX_AGENT_TOKEN"].includes(k)) env[k] = v;
}
Object.assign(env, {
  // The scripted ACP agent of the tests, run by the embedded sandbox-agent as the `pi` adapter.
  PATH: `${path.resolve(__dirname, "../tests/fixtures/bin")}:${process.env.PATH}`,
  HUDDLE_ADDR: `127.0.0.1:${port}`,
  HUDDLE_DATA_DIR: process.env.HUDDLE_E2E_DATA_DIR,
  HUDDLE_ADMIN_TOKEN: process.env.HUDDLE_E2E_ADMIN_TOKEN,
  LEPTOS_SITE_ROOT: "target/site",
  RUST_LOG: process.env.RUST_LOG ?? "info",
});

export default defineConfig({
  testDir: "./tests",
  timeout: 60_000,
  expect: { timeout: 15_000 },
  fullyParallel: false,
  workers: 1,
  retries: 0,
  reporter: [["list"]],
  outputDir: "./test-results",
  use: {
    baseURL,
    screenshot: "only-on-failure",
    trace: "retain-on-failure",
    launchOptions: {
      executablePath: "/usr/bin/chromium",
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        "--disable-quic",
      ],
    },
  },
  webServer: {
    // Its output is printed as [WebServer] lines, which scripts/test.sh reads: a panic fails the run.
    command: "./target/debug/huddle",
    cwd: "..",
    url: `${baseURL}/healthz`,
    timeout: 120_000,
    reuseExistingServer: false,
    // SIGTERM, so that Huddle stops the Postgres and sandbox-agent it started.
    gracefulShutdown: { signal: "SIGTERM", timeout: 15_000 },
    stdout: "pipe",
    stderr: "pipe",
    env,
  },
});
