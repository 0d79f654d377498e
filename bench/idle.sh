#!/usr/bin/env bash
# Idle SSE connections: gateway RSS growth per connection (DESIGN §5: ≤ 4 KiB).
# Then the same against nginx + Nchan (Redis-backed; NCHAN=0 skips it).
# Usage: bench/idle.sh [connections]   (never run in CI)
source "$(dirname "$0")/common.sh"
N=${1:-10000}
ulimit -n "$(ulimit -Hn)"   # each side holds one descriptor per stream
cargo build --release -q -p flowsync-api -p flowsync-gateway -p flowsync-bench
export FLOWSYNC_STORE__PATH=$DIR/flowsync.db
FLOWSYNC_LISTEN=127.0.0.1:18081 target/release/flowsync-api 2>"$DIR/api.log" & API=$!
PIDS+=("$API")
wait_up 18081 /healthz $API
create_flow 18081 idle
kill $API
FLOWSYNC_LISTEN=127.0.0.1:18082 FLOWSYNC_SSE__MAX_CONNECTIONS_PER_SUBJECT=1000000 \
  target/release/flowsync-gateway 2>"$DIR/gw.log" & GW=$!
PIDS+=("$GW")
wait_up 18082 /healthz $GW
target/release/sse_idle 127.0.0.1:18082 idle "$N" "$GW"
kill $GW
[ "${NCHAN:-1}" = 0 ] && exit 0
start_redis 16392
start_nchan 18090 idle
target/release/sse_idle 127.0.0.1:18090 /sub/idle "$N" "$(nchan_pids)"
