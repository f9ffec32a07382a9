#!/usr/bin/env bash
# Runs a command with a throwaway PostgreSQL on 127.0.0.1 (the billing store's test database),
# exporting HEARTH_TEST_POSTGRES_URL. Installs Debian's postgresql when it is missing.
set -euo pipefail
bin_dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bin_dir" ]; then
  apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
  bin_dir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi
dir=$(mktemp -d /tmp/hearth-pg.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_owner() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$dir"
as_owner "'$bin_dir/initdb' -D '$dir/data' -A trust -U postgres >/dev/null"
as_owner "'$bin_dir/pg_ctl' -D '$dir/data' -l '$dir/log' -w -o \"-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=on\" start >/dev/null"
stop() { as_owner "'$bin_dir/pg_ctl' -D '$dir/data' -m fast stop >/dev/null" || true; rm -rf "$dir"; }
trap stop EXIT
export HEARTH_TEST_POSTGRES_URL="host=127.0.0.1 port=$port user=postgres dbname=postgres"
export HEARTH_REQUIRE_POSTGRES=1
"$@"
