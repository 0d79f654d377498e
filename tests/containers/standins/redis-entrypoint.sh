#!/bin/sh
# `redis-server ARGS…` as the official image runs it: reachable from other containers.
if [ "$1" = redis-server ]; then
  shift
  exec redis-server --protected-mode no --bind 0.0.0.0 "$@"
fi
exec "$@"
