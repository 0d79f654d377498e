#!/usr/bin/env bash
# Idle SSE connections: gateway RSS growth per connection (DESIGN §5: ≤ 4 KiB).
# Usage: bench/idle.sh [connections]   (never run in CI)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
ulimit -n "$(ulimit -Hn)"   # each side holds one descriptor per stream
cargo build --release -q -p flowsync-api -p flowsync-gateway -p flowsync-bench
DATA=$(mktemp -d)
# Waits until a service answers, failing if it exited.
wait_up() { until curl -sf "localhost:$1/healthz" >/dev/null; do kill -0 "$2" || exit 1; sleep 0.1; done; }
trap 'kill $API $GW 2>/dev/null || true; rm -rf "$DATA"' EXIT
export FLOWSYNC_STORE__PATH=$DATA/flowsync.db
FLOWSYNC_LISTEN=127.0.0.1:18081 target/release/flowsync-api 2>"$DATA/api.log" & API=$!
wait_up 18081 $API
curl -sf -X POST localhost:18081/v1/flows -H 'content-type: application/json' -d '{"id":"idle","name":"idle"}' >/dev/null
kill $API
FLOWSYNC_LISTEN=127.0.0.1:18082 FLOWSYNC_SSE__MAX_CONNECTIONS_PER_SUBJECT=1000000 \
  target/release/flowsync-gateway 2>"$DATA/gw.log" & GW=$!
wait_up 18082 $GW
target/release/sse_idle 127.0.0.1:18082 idle "$N" "$GW"
