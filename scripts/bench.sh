#!/usr/bin/env bash
# Runs the benchmarks (release build) against a throw-away Postgres and the real sandbox-agent,
# and prints their figures; then the long-room benchmark in Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export SANDBOX_AGENT_BIN="$PWD/tools/node_modules/@sandbox-agent/cli-linux-x64/bin/sandbox-agent"
# A thousand SSE clients and their server need more than the default 1024 open files.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
source scripts/lib/throwaway-postgres.sh
# `BENCH_ONLY=sandboxes`, `crash`, `needs_you` or `cluster` runs those figures alone. In the
# cluster benchmark, `CLUSTER_BENCH=one` gives the one-node figures only, `balanced` those behind
# HAProxy only, `cross` stops after the cross-node figures.
if [ "${BENCH_ONLY:-}" = sandboxes ] || [ "${BENCH_ONLY:-}" = crash ] || [ "${BENCH_ONLY:-}" = needs_you ] || [ "${BENCH_ONLY:-}" = cluster ]; then
  cargo bench --features ssr --bench "$BENCH_ONLY"
  exit 0
fi
cargo bench --features ssr --bench store --bench room --bench cycles --bench sandboxes --bench needs_you --bench cluster

# A long room in Chromium (release build): page bytes, time to interactive, script per chunk.
export PATH="$PWD/tools/node_modules/.bin:$HOME/.cargo/bin:$PATH"
cargo leptos build --release
(cd end2end && HUDDLE_E2E_DATA_DIR="$(mktemp -d)" npx playwright test -c bench.config.ts 2>&1 | grep -v '^\[WebServer\]')
