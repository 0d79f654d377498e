#!/usr/bin/env bash
# Resume: time for a reconnecting client to receive the events it missed (replayed from
# the Redis history by the gateway). Never run in CI.
# Usage: bench/resume.sh [missed] [rounds]
source "$(dirname "$0")/common.sh"
MISSED=${1:-1000}
ROUNDS=${2:-50}
cargo build --release -q -p flowsync-api -p flowsync-gateway -p flowsync-bench
start_redis 16391
export FLOWSYNC_STORE__PATH=$DIR/flowsync.db FLOWSYNC_BUS__KIND=redis FLOWSYNC_BUS__URL=redis://127.0.0.1:$REDIS_PORT
FLOWSYNC_LISTEN=127.0.0.1:18083 target/release/flowsync-api 2>"$DIR/api.log" & API=$!
PIDS+=("$API")
wait_up 18083 /healthz $API
create_flow 18083 resume
kill $API
FLOWSYNC_LISTEN=127.0.0.1:18084 target/release/flowsync-gateway 2>"$DIR/gw.log" & GW=$!
PIDS+=("$GW")
wait_up 18084 /healthz $GW
target/release/sse_resume 127.0.0.1:18084 redis://127.0.0.1:$REDIS_PORT resume "$MISSED" "$ROUNDS"
