#!/usr/bin/env bash
# Stand-in images for the container tests, made without a registry and kept in the engine
# between runs (tagged with a hash of what makes them, so a change rebuilds them):
#   flowsync-test/base     Debian bookworm from this machine's apt sources (mmdebstrap)
#                          with ca-certificates, curl, redis-server, nginx-light, python3
#   flowsync-test/redis    redis:7-alpine's place      (standins/redis.Dockerfile)
#   flowsync-test/mongo    mongo:7's place: SecantusDB (standins/mongo.Dockerfile)
#   flowsync-test/nginx    nginx:1.27-alpine's place   (standins/nginx.Dockerfile)
# Usage: tests/containers/images.sh STATE_DIR   (DOCKER_HOST set); writes STATE_DIR/images.env.
set -euo pipefail
cd "$(dirname "$0")/../.."
STATE=$1
HERE=tests/containers/standins

packages=ca-certificates,curl,redis-server,nginx-light,python3
# The same SecantusDB as the Rust tests use (one pin, in the test command).
secantus=$(grep -o 'SecantusDB==[^" ]*' scripts/test | head -1)
[ -n "$secantus" ] || { echo "images: no SecantusDB pin in scripts/test" >&2; exit 1; }
base=flowsync-test/base:$(echo "$packages" | sha256sum | cut -c1-12)
hash=$( { echo "$base $secantus"; cat "$HERE"/*; } | sha256sum | cut -c1-12)

if [ -z "$(docker images -q "$base")" ]; then
  echo "==> $base: Debian bookworm with $packages (mmdebstrap, ~1 min)"
  mmdebstrap --quiet --variant=apt --include="$packages" bookworm - | docker import - "$base" >/dev/null
fi

# Runs a command, showing its output only when it fails (the legacy builder's deprecation
# notice is not news).
quietly() {
  local out
  out=$("$@" 2>&1) || { printf '%s\n' "$out" >&2; return 1; }
}

build() { # NAME FILES…: flowsync-test/NAME:HASH from standins/NAME.Dockerfile and FILES
  local name=$1; shift
  local image=flowsync-test/$name:$hash
  if [ -z "$(docker images -q "$image")" ]; then
    local context
    context=$(mktemp -d)
    cp "$HERE/$name.Dockerfile" "$context/Dockerfile"
    for f in "$@"; do cp -r "$f" "$context/"; done
    echo "==> $image"
    quietly docker build --quiet --build-arg BASE="$base" -t "$image" "$context"
    rm -rf "$context"
  fi
  printf '%s_IMAGE=%s\n' "$(tr a-z A-Z <<<"$name")" "$image" >>"$STATE/images.env.tmp"
}

rm -f "$STATE/images.env.tmp"
build redis "$HERE/redis-entrypoint.sh"
build nginx
packages_dir=$STATE/$secantus
if [ ! -d "$packages_dir" ]; then
  echo "==> $secantus for the MongoDB stand-in (pip --target, on the host)"
  .venv/bin/pip install -q --disable-pip-version-check --target "$packages_dir.part" "$secantus"
  mv "$packages_dir.part" "$packages_dir"
fi
ln -sfn "$packages_dir" "$STATE/secantus"
build mongo "$STATE/secantus/"
mv "$STATE/images.env.tmp" "$STATE/images.env"
