#!/usr/bin/env bash
# The one binary (`target/release/flowsync`, what `cargo run --release` starts) measured as
# users meet it: ops POSTed to it, SSE clients reading from it on the same port; nginx +
# Nchan (Redis-backed) beside it with the same generator, in one run. Then, with IDLE=n,
# RSS per idle stream at n streams (the binary, then Nchan). Never run in CI.
# Usage: bench/onebinary.sh [clients] [seconds] [rate…]   (NCHAN=0: the binary only)
#   bench/onebinary.sh 1000 5 100 300 1000 3000
#   IDLE=10000 bench/onebinary.sh 1000 5
#   BIN=/tmp/old/flowsync bench/onebinary.sh …   (another build of the binary, e.g. before a change)
source "$(dirname "$0")/common.sh"
CLIENTS=${1:-1000}
SECONDS_PER_RUN=${2:-5}
shift 2 2>/dev/null || true
RATES=("${@:-100 300 1000 3000}")
ulimit -n "$(ulimit -Hn)"
cargo build --release -q -p flowsync -p flowsync-bench

${BIN:-target/release/flowsync} --listen 127.0.0.1:18080 --data-dir "$DIR/data" >"$DIR/flowsync.log" 2>&1 & ONE=$!
PIDS+=("$ONE")
wait_up 18080 /healthz $ONE
for flow in fanout idle; do
  create_flow 18080 "$flow"
  curl -sf -X POST "localhost:18080/v1/flows/$flow/ops" -H 'content-type: application/json' \
    -d '{"client_id":"setup","ops":[{"op_id":"n","type":"node.add","node":{"id":"n","type":"note","position":{"x":0,"y":0}}}]}' >/dev/null
done
if [ "${NCHAN:-1}" != 0 ]; then
  start_redis 16393
  start_nchan 18090 fanout
fi
for rate in ${RATES[@]}; do
  target/release/sse_fanout ops 127.0.0.1:18080 - "$CLIENTS" "$rate" "$SECONDS_PER_RUN" $ONE
  [ "${NCHAN:-1}" = 0 ] || target/release/sse_fanout nchan 127.0.0.1:18090 - "$CLIENTS" "$rate" "$SECONDS_PER_RUN" "$(nchan_pids)"
done
if [ "${IDLE:-0}" -gt 0 ]; then
  target/release/sse_idle 127.0.0.1:18080 idle "$IDLE" "$ONE"
  [ "${NCHAN:-1}" = 0 ] || target/release/sse_idle 127.0.0.1:18090 /sub/idle "$IDLE" "$(nchan_pids)"
fi
