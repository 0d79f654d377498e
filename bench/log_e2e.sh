#!/usr/bin/env bash
# LOG_STREAM end to end, distributed: a model (stand-in) writes stamped tokens at a fixed
# rate → runner (llm node) → Redis → gateway → an SSE client; latency from the token's
# write to the client's read. Never run in CI.
# Usage: bench/log_e2e.sh [tokens] [tokens/s]
set -euo pipefail
cd "$(dirname "$0")/.."
TOKENS=${1:-10000}
RATE=${2:-1000}
cargo build --release -q -p flowsync-api -p flowsync-gateway -p flowsync-runner -p flowsync-bench
DIR=$(mktemp -d)
REDIS_PORT=16393
redis-server --port $REDIS_PORT --save '' --appendonly no --daemonize yes --dir "$DIR" >/dev/null
trap 'kill $API $GW $RUNNER $LLM $WATCH 2>/dev/null || true; redis-cli -p $REDIS_PORT shutdown nosave >/dev/null 2>&1 || true; rm -rf "$DIR"' EXIT
RUNNER= LLM= WATCH=
wait_up() { until curl -s -o /dev/null "localhost:$1/healthz"; do kill -0 "$2" || exit 1; sleep 0.1; done; }
export FLOWSYNC_STORE__PATH=$DIR/flowsync.db FLOWSYNC_BUS__KIND=redis FLOWSYNC_BUS__URL=redis://127.0.0.1:$REDIS_PORT
FLOWSYNC_LISTEN=127.0.0.1:18085 target/release/flowsync-api 2>"$DIR/api.log" & API=$!
FLOWSYNC_LISTEN=127.0.0.1:18086 target/release/flowsync-gateway 2>"$DIR/gw.log" & GW=$!
target/release/llm_pace 18087 "$TOKENS" "$RATE" & LLM=$!
FLOWSYNC_RUNNER__LLM__BASE_URL=http://127.0.0.1:18087/v1 target/release/flowsync-runner 2>"$DIR/runner.log" & RUNNER=$!
wait_up 18085 $API
wait_up 18086 $GW
curl -sf -X POST localhost:18085/v1/flows -H 'content-type: application/json' -d '{"id":"logs","name":"logs"}' >/dev/null
curl -sf -X POST localhost:18085/v1/flows/logs/ops -H 'content-type: application/json' -d '{"client_id":"bench","ops":[
  {"op_id":"a","type":"node.add","node":{"id":"ask","type":"llm","position":{"x":0,"y":0},"data":{"prompt":"stream"}}}]}' >/dev/null
mkfifo "$DIR/watch"
target/release/sse_watch 127.0.0.1:18086 logs "$TOKENS" > "$DIR/watch" & WATCH=$!
exec 3<"$DIR/watch"
read -r _ <&3   # "watching": the stream is open
curl -sf -X POST localhost:18085/v1/flows/logs/executions >/dev/null
cat <&3
wait $WATCH
