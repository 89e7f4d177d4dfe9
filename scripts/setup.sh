#!/usr/bin/env bash
# Installs everything Huddle needs on a fresh machine. Idempotent, and quick when all is there.
# Every version is pinned here, in Cargo.lock, tools/package-lock.json or end2end/package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_LEPTOS_VERSION=0.3.7
log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }

export PATH="$HOME/.cargo/bin:$PATH"

# Debian packages: Chromium for the browser tests, Postgres server binaries for the embedded cluster.
apt_needed=()
command -v chromium >/dev/null 2>&1 || apt_needed+=(chromium)
# bubblewrap: Codex runs commands and reads files for its edits through it (its own sandbox).
command -v bwrap >/dev/null 2>&1 || apt_needed+=(bubblewrap)
# haproxy: the load balancer the several-nodes tests put in front of three Huddle nodes.
command -v haproxy >/dev/null 2>&1 || apt_needed+=(haproxy)
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null 2>&1 || apt_needed+=(postgresql)
if [ ${#apt_needed[@]} -gt 0 ]; then
  log "apt-get install ${apt_needed[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${apt_needed[@]}" >/dev/null
fi

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  log "rustup target add wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi

if [ "$(cargo leptos --version 2>/dev/null | awk '{print $2}')" != "$CARGO_LEPTOS_VERSION" ]; then
  log "cargo install cargo-leptos $CARGO_LEPTOS_VERSION (about 25 minutes on 2 cores)"
  cargo install cargo-leptos@"$CARGO_LEPTOS_VERSION" --locked --features no_downloads
fi

# cargo-leptos calls the wasm-bindgen CLI, which must match the wasm-bindgen crate exactly.
WASM_BINDGEN_VERSION=$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/"/, "", $3); print $3}' Cargo.lock)
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$WASM_BINDGEN_VERSION" ]; then
  log "cargo install wasm-bindgen-cli $WASM_BINDGEN_VERSION"
  # Not --locked: its lockfile names a crate version the registry no longer has.
  cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --force
fi

# Node packages: the sandbox-agent server and wasm-opt (tools/), Playwright (end2end/).
for dir in tools end2end; do
  if [ ! -f "$dir/node_modules/.package-lock.json" ] || ! cmp -s "$dir/package-lock.json" "$dir/node_modules/.huddle-lock"; then
    # tools/ is installed with `npm install` (exact pins and the lock, which it leaves as it is):
    # `npm ci` refuses a lock that lists only this platform's package of @openai/codex's aliased
    # optional ones, and npm writes no other.
    if [ "$dir" = tools ]; then install=install; else install=ci; fi
    log "npm $install in $dir"
    (cd "$dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm "$install" --no-audit --no-fund --loglevel=error)
    cp "$dir/package-lock.json" "$dir/node_modules/.huddle-lock"
  fi
done
chmod +x tools/node_modules/@sandbox-agent/cli-linux-x64/bin/sandbox-agent
log "ready"
