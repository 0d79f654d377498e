#!/usr/bin/env bash
# Fan-out on one channel: the flowsync gateway and nginx + Nchan (both Redis-backed), the
# same load generator, the same clients and rates, in one run (DESIGN §5, issue "SSE
# gateway"). Never run in CI.
# Usage: bench/fanout.sh [clients] [seconds] [rate…]   (NCHAN=0 measures flowsync only;
#        FLOWS=n spreads the clients and events over n flows, e.g. FLOWS=1000 with 5000 clients)
# One client at high rates is the LOG_STREAM figure of issue 7: bench/fanout.sh 1 5 1000 20000
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${1:-1000}
SECONDS_PER_RUN=${2:-5}
shift 2 2>/dev/null || true
RATES=("${@:-170 300 1000 3000}")
ulimit -n "$(ulimit -Hn)"
command -v nginx >/dev/null || { echo "apt-get install nginx-light libnginx-mod-nchan"; exit 1; }
cargo build --release -q -p flowsync-api -p flowsync-gateway -p flowsync-bench
DIR=$(mktemp -d)
REDIS_PORT=16390
redis-server --port $REDIS_PORT --save '' --appendonly no --daemonize yes --dir "$DIR" >/dev/null
trap 'kill $API $GW $NGINX 2>/dev/null || true; redis-cli -p $REDIS_PORT shutdown nosave >/dev/null 2>&1 || true; rm -rf "$DIR"' EXIT
wait_up() { until curl -s -o /dev/null "localhost:$1$2"; do kill -0 "$3" || exit 1; sleep 0.1; done; }

# flowsync: the flow must exist in the store the gateway reads.
export FLOWSYNC_STORE__PATH=$DIR/flowsync.db FLOWSYNC_BUS__KIND=redis FLOWSYNC_BUS__URL=redis://127.0.0.1:$REDIS_PORT
FLOWSYNC_LISTEN=127.0.0.1:18081 FLOWSYNC_HTTP__RATE_PER_SECOND=0 target/release/flowsync-api 2>"$DIR/api.log" & API=$!
wait_up 18081 /healthz $API
if [ "${FLOWS:-1}" -le 1 ]; then
  curl -sf -X POST localhost:18081/v1/flows -H 'content-type: application/json' -d '{"id":"fanout","name":"fanout"}' >/dev/null
else
  for i in $(seq 0 $((FLOWS - 1))); do
    curl -sf -X POST localhost:18081/v1/flows -H 'content-type: application/json' -d "{\"id\":\"fanout$i\",\"name\":\"fanout\"}" >/dev/null
  done
fi
kill $API
FLOWSYNC_LISTEN=127.0.0.1:18082 FLOWSYNC_SSE__MAX_CONNECTIONS_PER_SUBJECT=1000000 \
  target/release/flowsync-gateway 2>"$DIR/gw.log" & GW=$!
wait_up 18082 /healthz $GW

mkdir -p "$DIR/body"
sed -e "s|__PORT__|18090|; s|__REDIS__|127.0.0.1:$REDIS_PORT|; s|__DIR__|$DIR|g" bench/nchan/nginx.conf > "$DIR/nginx.conf"
nginx -c "$DIR/nginx.conf" & NGINX=$!
wait_up 18090 /pub/fanout $NGINX

for rate in ${RATES[@]}; do
  target/release/sse_fanout flowsync 127.0.0.1:18082 redis://127.0.0.1:$REDIS_PORT "$CLIENTS" "$rate" "$SECONDS_PER_RUN" $GW
  [ "${NCHAN:-1}" = 0 ] || target/release/sse_fanout nchan 127.0.0.1:18090 - "$CLIENTS" "$rate" "$SECONDS_PER_RUN" "$(pgrep -d, -P $NGINX),$NGINX"
done
