#!/usr/bin/env bash
# LOG_STREAM end to end, distributed: a model (stand-in) writes stamped tokens at a fixed
# rate → runner (llm node) → Redis → gateway → an SSE client; latency from the token's
# write to the client's read. Never run in CI.
# Usage: bench/log_e2e.sh [tokens] [tokens/s]
source "$(dirname "$0")/common.sh"
TOKENS=${1:-10000}
RATE=${2:-1000}
cargo build --release -q -p flowsync-api -p flowsync-gateway -p flowsync-runner -p flowsync-bench
start_redis 16393
export FLOWSYNC_STORE__PATH=$DIR/flowsync.db FLOWSYNC_BUS__KIND=redis FLOWSYNC_BUS__URL=redis://127.0.0.1:$REDIS_PORT
FLOWSYNC_LISTEN=127.0.0.1:18085 target/release/flowsync-api 2>"$DIR/api.log" & API=$!
FLOWSYNC_LISTEN=127.0.0.1:18086 target/release/flowsync-gateway 2>"$DIR/gw.log" & GW=$!
target/release/llm_pace 18087 "$TOKENS" "$RATE" & LLM=$!
FLOWSYNC_RUNNER__LLM__BASE_URL=http://127.0.0.1:18087/v1 target/release/flowsync-runner 2>"$DIR/runner.log" & RUNNER=$!
PIDS+=("$API" "$GW" "$LLM" "$RUNNER")
wait_up 18085 /healthz $API
wait_up 18086 /healthz $GW
create_flow 18085 logs
curl -sf -X POST localhost:18085/v1/flows/logs/ops -H 'content-type: application/json' -d '{"client_id":"bench","ops":[
  {"op_id":"a","type":"node.add","node":{"id":"ask","type":"llm","position":{"x":0,"y":0},"data":{"prompt":"stream"}}}]}' >/dev/null
mkfifo "$DIR/watch"
target/release/sse_watch 127.0.0.1:18086 logs "$TOKENS" > "$DIR/watch" & WATCH=$!
PIDS+=("$WATCH")
exec 3<"$DIR/watch"
read -r _ <&3   # "watching": the stream is open
curl -sf -X POST localhost:18085/v1/flows/logs/executions >/dev/null
cat <&3
wait $WATCH
