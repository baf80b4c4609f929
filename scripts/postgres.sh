#!/usr/bin/env bash
# A PostgreSQL server of the tests' own on loopback (issue 9), from Debian's postgresql package.
#   bash scripts/postgres.sh start   start it unless it runs; print MLA_TEST_POSTGRES=<its URL>
#   bash scripts/postgres.sh stop    stop it
# Its files live in $MLA_PG_DIR (default /tmp/mla-postgres-<uid>); trust authentication on
# 127.0.0.1 only, user "mla". As root it runs as the "postgres" user (initdb refuses root).
set -euo pipefail
action=${1:-start}
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$bindir" ] || [ ! -x "$bindir/postgres" ]; then
  echo "scripts/postgres.sh: no PostgreSQL server (apt-get install postgresql)" >&2
  exit 3
fi
dir=${MLA_PG_DIR:-${TMPDIR:-/tmp}/mla-postgres-$(id -u)}
as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
pg_ctl() { as_owner "$bindir/pg_ctl" -D "$dir/data" "$@"; }

if [ "$action" = stop ]; then
  if [ -d "$dir/data" ]; then pg_ctl -m fast -w stop >/dev/null 2>&1 || true; fi
  exit 0
fi
mkdir -p "$dir"
if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; fi
if [ ! -f "$dir/data/PG_VERSION" ]; then
  as_owner "$bindir/initdb" -D "$dir/data" -U mla --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
fi
if [ ! -s "$dir/port" ]; then
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' >"$dir/port"
fi
port=$(cat "$dir/port")
if ! pg_ctl status >/dev/null 2>&1; then
  pg_ctl -w -t 60 -l "$dir/server.log" \
    -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir -c max_connections=300" \
    start >/dev/null || { tail -20 "$dir/server.log" >&2; exit 1; }
fi
echo "MLA_TEST_POSTGRES=postgresql://mla@127.0.0.1:$port/postgres"
