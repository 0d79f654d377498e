#!/usr/bin/env bash
# Builds the flowsync runtime image (deploy/Dockerfile.host: the same image as
# deploy/Dockerfile's) from binaries built on this machine, for machines without an image
# registry or without a Rust toolchain in a container. Nothing is pulled: the base is a
# Debian root filesystem that mmdebstrap makes from this machine's apt sources, imported
# once as flowsync-base:bookworm-<hash of its package list>.
#
#   deploy/host-image.sh                  # cargo build --release, then flowsync:local
#   deploy/host-image.sh --profile debug --no-build --tag flowsync:test
#   docker compose up                     # uses flowsync:local
#
# Needs: docker (DOCKER_HOST is honoured), mmdebstrap, cargo (unless --no-build), strip.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
build=1
tag=flowsync:local
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --tag) tag=$2; shift 2 ;;
    *) echo "usage: $0 [--profile release|debug] [--no-build] [--tag NAME:TAG]" >&2; exit 2 ;;
  esac
done

binaries=(flowsync-api flowsync-gateway flowsync-runner flowsync)
packages=ca-certificates,curl
base="flowsync-base:bookworm-$(printf '%s' "$packages" | sha256sum | cut -c1-12)"

if [ "$build" = 1 ]; then
  flag=(); [ "$profile" = release ] && flag=(--release)
  cargo build "${flag[@]}" --locked $(printf -- '-p %s ' "${binaries[@]}")
fi

if [ -z "$(docker images -q "$base")" ]; then
  echo "==> $base: a Debian bookworm root filesystem with $packages (mmdebstrap)"
  mmdebstrap --quiet --variant=apt --include="$packages" bookworm - | docker import - "$base" >/dev/null
fi

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
for b in "${binaries[@]}"; do
  # Debug info stays on the host: the image carries what runs.
  strip --strip-debug -o "$context/$b" "target/$profile/$b"
done
cp deploy/Dockerfile.host "$context/Dockerfile"
echo "==> $tag from target/$profile (deploy/Dockerfile.host on $base)"
out=$(docker build --quiet --build-arg BASE="$base" -t "$tag" "$context" 2>&1) || {
  printf '%s\n' "$out" >&2
  exit 1
}
