#!/usr/bin/env bash
# Runs a command with a throwaway Redis on 127.0.0.1 (the gateway's shared limiter in tests),
# exporting HEARTH_TEST_REDIS_URL. Installs Debian's redis-server when it is missing.
# Composes with with-postgres.sh: `scripts/with-postgres.sh scripts/with-redis.sh cargo test`.
set -euo pipefail
server=$(command -v redis-server || true)
if [ -z "$server" ]; then
  apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
  server=$(command -v redis-server)
fi
dir=$(mktemp -d /tmp/hearth-redis.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$server" --bind 127.0.0.1 --port "$port" --dir "$dir" --save '' --appendonly no \
  --daemonize no --logfile "$dir/log" &
pid=$!
stop() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir"; }
trap stop EXIT
for _ in $(seq 1 100); do
  redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { cat "$dir/log" >&2; exit 1; }
  sleep 0.05
done
export HEARTH_TEST_REDIS_URL="redis://127.0.0.1:$port/"
export HEARTH_REQUIRE_REDIS=1
"$@"
