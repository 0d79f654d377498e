#!/usr/bin/env bash
# Fan-out on one channel: the flowsync gateway and nginx + Nchan (both Redis-backed), the
# same load generator, the same clients and rates, in one run (DESIGN §5, issue "SSE
# gateway"). Never run in CI.
# Usage: bench/fanout.sh [clients] [seconds] [rate…]   (NCHAN=0 measures flowsync only;
#        FLOWS=n spreads the clients and events over n flows, e.g. FLOWS=1000 with 5000 clients)
# One client at high rates is the LOG_STREAM figure of issue 7: bench/fanout.sh 1 5 1000 20000
source "$(dirname "$0")/common.sh"
CLIENTS=${1:-1000}
SECONDS_PER_RUN=${2:-5}
shift 2 2>/dev/null || true
RATES=("${@:-170 300 1000 3000}")
ulimit -n "$(ulimit -Hn)"
cargo build --release -q -p flowsync-api -p flowsync-gateway -p flowsync-bench
start_redis 16390

# flowsync: the flows must exist in the store the gateway reads.
export FLOWSYNC_STORE__PATH=$DIR/flowsync.db FLOWSYNC_BUS__KIND=redis FLOWSYNC_BUS__URL=redis://127.0.0.1:$REDIS_PORT
FLOWSYNC_LISTEN=127.0.0.1:18081 FLOWSYNC_HTTP__RATE_PER_SECOND=0 target/release/flowsync-api 2>"$DIR/api.log" & API=$!
PIDS+=("$API")
wait_up 18081 /healthz $API
if [ "${FLOWS:-1}" -le 1 ]; then
  create_flow 18081 fanout
else
  for i in $(seq 0 $((FLOWS - 1))); do create_flow 18081 "fanout$i"; done
fi
kill $API
FLOWSYNC_LISTEN=127.0.0.1:18082 FLOWSYNC_SSE__MAX_CONNECTIONS_PER_SUBJECT=1000000 \
  target/release/flowsync-gateway 2>"$DIR/gw.log" & GW=$!
PIDS+=("$GW")
wait_up 18082 /healthz $GW
[ "${NCHAN:-1}" = 0 ] || start_nchan 18090 fanout

for rate in ${RATES[@]}; do
  target/release/sse_fanout flowsync 127.0.0.1:18082 redis://127.0.0.1:$REDIS_PORT "$CLIENTS" "$rate" "$SECONDS_PER_RUN" $GW
  [ "${NCHAN:-1}" = 0 ] || target/release/sse_fanout nchan 127.0.0.1:18090 - "$CLIENTS" "$rate" "$SECONDS_PER_RUN" "$(nchan_pids)"
done
