#!/bin/sh
# Mirrors the official redis image's entrypoint for the one thing the demo relies on: a
# `redis-server` started without a config file runs with protected mode off.
set -e
if [ "${1:-}" = "redis-server" ]; then
  shift
  exec redis-server --protected-mode no "$@"
fi
exec "$@"
