# Sourced by the bench scripts: the repository as working directory, a scratch directory
# ($DIR) removed on exit with every process recorded in PIDS, and the steps they share.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DIR=$(mktemp -d)
PIDS=()
REDIS_PORT=
cleanup() {
  kill "${PIDS[@]}" 2>/dev/null || true
  [ -z "$REDIS_PORT" ] || redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap cleanup EXIT

# start_redis PORT: a Redis that keeps nothing, for this run only.
start_redis() {
  REDIS_PORT=$1
  redis-server --port "$1" --save '' --appendonly no --daemonize yes --dir "$DIR" >/dev/null
}

# wait_up PORT PATH PID: until something answers on PORT, failing if PID exited.
wait_up() { until curl -s -o /dev/null "localhost:$1$2"; do kill -0 "$3" || exit 1; sleep 0.1; done; }

# create_flow API_PORT ID
create_flow() {
  curl -sf -X POST "localhost:$1/v1/flows" -H 'content-type: application/json' \
    -d "{\"id\":\"$2\",\"name\":\"$2\"}" >/dev/null
}

# start_nchan PORT CHANNEL: nginx + Nchan on PORT over this run's Redis (sets NGINX).
start_nchan() {
  command -v nginx >/dev/null || { echo "apt-get install nginx-light libnginx-mod-nchan"; exit 1; }
  mkdir -p "$DIR/body"
  sed -e "s|__PORT__|$1|; s|__REDIS__|127.0.0.1:$REDIS_PORT|; s|__DIR__|$DIR|g" bench/nchan/nginx.conf > "$DIR/nginx.conf"
  nginx -c "$DIR/nginx.conf" & NGINX=$!
  PIDS+=("$NGINX")
  wait_up "$1" "/pub/$2" "$NGINX"
}

# nchan_pids: nginx's master and workers, comma-separated.
nchan_pids() { echo "$(pgrep -d, -P "$NGINX"),$NGINX"; }
