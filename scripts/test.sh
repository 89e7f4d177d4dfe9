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
WORK=$(mktemp -d /tmp/huddle-test.XXXXXX)
chmod 755 "$WORK"
PGBIN=$(dirname "$(ls /usr/lib/postgresql/*/bin/pg_ctl | sort -V | tail -n 1)")
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" stop -m fast >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/pg"
[ "$(id -u)" = 0 ] && chown postgres "$WORK/pg"
PGPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg "$PGBIN/initdb" -D "$WORK/pg" -U huddle --auth=trust -E UTF8 >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -w -l "$WORK/pg/server.log" \
  -o "-c listen_addresses=127.0.0.1 -p $PGPORT -c unix_socket_directories='' -c max_connections=300 -c fsync=off" start >/dev/null
export HUDDLE_TEST_DATABASE_URL="postgres://huddle@127.0.0.1:$PGPORT/postgres"

log "cargo test (unit and integration)"
cargo test --features ssr

log "cargo leptos build"
cargo leptos build
log "playwright"
(cd end2end && HUDDLE_E2E_DATA_DIR="$WORK/e2e" npx playwright test)
