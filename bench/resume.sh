#!/usr/bin/env bash
# Resume: time for a reconnecting client to receive the events it missed (replayed from
# the Redis history by the gateway). Never run in CI.
# Usage: bench/resume.sh [missed] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
MISSED=${1:-1000}
ROUNDS=${2:-50}
cargo build --release -q -p flowsync-api -p flowsync-gateway -p flowsync-bench
DIR=$(mktemp -d)
REDIS_PORT=16391
redis-server --port $REDIS_PORT --save '' --appendonly no --daemonize yes --dir "$DIR" >/dev/null
trap 'kill $API $GW 2>/dev/null || true; redis-cli -p $REDIS_PORT shutdown nosave >/dev/null 2>&1 || true; rm -rf "$DIR"' EXIT
wait_up() { until curl -s -o /dev/null "localhost:$1/healthz"; do kill -0 "$2" || exit 1; sleep 0.1; done; }
export FLOWSYNC_STORE__PATH=$DIR/flowsync.db FLOWSYNC_BUS__KIND=redis FLOWSYNC_BUS__URL=redis://127.0.0.1:$REDIS_PORT
FLOWSYNC_LISTEN=127.0.0.1:18083 target/release/flowsync-api 2>"$DIR/api.log" & API=$!
wait_up 18083 $API
curl -sf -X POST localhost:18083/v1/flows -H 'content-type: application/json' -d '{"id":"resume","name":"resume"}' >/dev/null
kill $API
FLOWSYNC_LISTEN=127.0.0.1:18084 target/release/flowsync-gateway 2>"$DIR/gw.log" & GW=$!
wait_up 18084 $GW
target/release/sse_resume 127.0.0.1:18084 redis://127.0.0.1:$REDIS_PORT resume "$MISSED" "$ROUNDS"
