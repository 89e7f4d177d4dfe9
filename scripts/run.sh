#!/usr/bin/env bash
# Builds and runs Huddle at http://127.0.0.1:3000 on its embedded defaults: its own Postgres
# (in .huddle/) and its own sandbox-agent, unless DATABASE_URL / SANDBOX_AGENT_URL say otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/tools/node_modules/.bin:$HOME/.cargo/bin:$PATH"
exec cargo leptos serve "$@"
