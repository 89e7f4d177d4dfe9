#!/usr/bin/env bash
# Runs every check and test: formatting, clippy (ssr and hydrate), Rust unit and integration tests
# against a real Postgres and the real sandbox-agent, then Playwright in Debian Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
scripts/setup.sh
export PATH="$ROOT/tools/node_modules/.bin:$HOME/.cargo/bin:$PATH"
export SANDBOX_AGENT_BIN="$ROOT/tools/node_modules/@sandbox-agent/cli-linux-x64/bin/sandbox-agent"
log() { printf '\033[1;34m[test]\033[0m %s\n' "$*"; }

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy (ssr)"
cargo clippy --features ssr --all-targets -- -D warnings
log "cargo clippy (hydrate, wasm32)"
cargo clippy --lib --features hydrate --target wasm32-unknown-unknown -- -D warnings

# A throw-away Postgres for the integration tests; each test makes its own database in it.
source scripts/lib/throwaway-postgres.sh

log "cargo test (unit and integration)"
cargo test --features ssr --no-run
# A test that hangs fails the run here, with the output so far (libtest names a test that runs
# over 60 s), long before CI's own limit would end it with nothing said. The suite takes ~3 min.
if ! timeout --kill-after=30s 30m cargo test --features ssr; then
  log "cargo test failed or ran over 30 minutes (a test running over 60 s is named above)"
  exit 1
fi

log "cargo leptos build"
cargo leptos build
log "playwright"
SERVER_LOG="$WORK/e2e-output.log"
# Playwright prints the server's output as [WebServer] lines: kept, and read for panics below.
(cd end2end && HUDDLE_E2E_DATA_DIR="$WORK/e2e" npx playwright test 2>&1 | tee "$SERVER_LOG")
# A panic anywhere in the server fails the run, even when every page looked right. (A panic in
# a page fails its own test: end2end/tests/helpers.ts watches every browser context.)
if grep -n -A3 "panicked" "$SERVER_LOG"; then
  log "the server log holds a panic (above)"
  exit 1
fi
log "server log: no panic"
