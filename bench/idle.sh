#!/usr/bin/env bash
# Idle SSE connections: gateway RSS growth per connection (DESIGN §5: ≤ 4 KiB).
# Then the same against nginx + Nchan (Redis-backed; NCHAN=0 skips it).
# Usage: bench/idle.sh [connections]   (never run in CI)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
ulimit -n "$(ulimit -Hn)"   # each side holds one descriptor per stream
cargo build --release -q -p flowsync-api -p flowsync-gateway -p flowsync-bench
DATA=$(mktemp -d)
# Waits until a service answers, failing if it exited.
wait_up() { until curl -sf "localhost:$1/healthz" >/dev/null; do kill -0 "$2" || exit 1; sleep 0.1; done; }
REDIS_PORT=16392
trap 'kill $API $GW $NGINX 2>/dev/null || true; redis-cli -p $REDIS_PORT shutdown nosave >/dev/null 2>&1 || true; rm -rf "$DATA"' EXIT
NGINX=
export FLOWSYNC_STORE__PATH=$DATA/flowsync.db
FLOWSYNC_LISTEN=127.0.0.1:18081 target/release/flowsync-api 2>"$DATA/api.log" & API=$!
wait_up 18081 $API
curl -sf -X POST localhost:18081/v1/flows -H 'content-type: application/json' -d '{"id":"idle","name":"idle"}' >/dev/null
kill $API
FLOWSYNC_LISTEN=127.0.0.1:18082 FLOWSYNC_SSE__MAX_CONNECTIONS_PER_SUBJECT=1000000 \
  target/release/flowsync-gateway 2>"$DATA/gw.log" & GW=$!
wait_up 18082 $GW
target/release/sse_idle 127.0.0.1:18082 idle "$N" "$GW"
kill $GW
[ "${NCHAN:-1}" = 0 ] && exit 0
command -v nginx >/dev/null || { echo "apt-get install nginx-light libnginx-mod-nchan"; exit 1; }
redis-server --port $REDIS_PORT --save '' --appendonly no --daemonize yes --dir "$DATA" >/dev/null
mkdir -p "$DATA/body"
sed -e "s|__PORT__|18090|; s|__REDIS__|127.0.0.1:$REDIS_PORT|; s|__DIR__|$DATA|g" bench/nchan/nginx.conf > "$DATA/nginx.conf"
nginx -c "$DATA/nginx.conf" & NGINX=$!
until curl -s -o /dev/null localhost:18090/pub/idle; do kill -0 $NGINX || exit 1; sleep 0.1; done
target/release/sse_idle 127.0.0.1:18090 /sub/idle "$N" "$(pgrep -d, -P $NGINX),$NGINX"
