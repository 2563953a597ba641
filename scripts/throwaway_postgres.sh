#!/usr/bin/env bash
# Start a throwaway PostgreSQL cluster in a temporary folder on 127.0.0.1 and print the
# commands that use it. Installs Debian's postgresql package when no server is present.
#
#   eval "$(scripts/throwaway_postgres.sh start)"   # exports AUTOMODEL_TEST_POSTGRES_URL, PG_TMP
#   scripts/throwaway_postgres.sh stop "$PG_TMP"
#   scripts/throwaway_postgres.sh restart "$PG_TMP" 3   # down for 3 s (tests of a DB restart)
set -euo pipefail

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

case "${1:-}" in
start)
  if [ -z "$(pg_bin)" ]; then
    echo "installing postgresql from Debian's packages" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  fi
  bin=$(pg_bin)
  tmp=$(mktemp -d /tmp/automodel-pg.XXXXXX)
  [ "$(id -u)" = 0 ] && chown postgres "$tmp"
  as_pg "$bin/initdb" -D "$tmp/data" -A trust -U postgres >/dev/null
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  as_pg "$bin/pg_ctl" -D "$tmp/data" -o "-h 127.0.0.1 -p $port -k $tmp" -l "$tmp/server.log" -w start >&2
  as_pg "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres automodel_test
  echo "export PG_TMP=$tmp"
  echo "export AUTOMODEL_TEST_POSTGRES_URL=postgresql+psycopg2://postgres@127.0.0.1:$port/automodel_test"
  ;;
stop)
  tmp=${2:?usage: $0 stop PG_TMP}
  bin=$(pg_bin)
  as_pg "$bin/pg_ctl" -D "$tmp/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$tmp"
  ;;
restart)
  tmp=${2:?usage: $0 restart PG_TMP [SECONDS_DOWN]}
  bin=$(pg_bin)
  as_pg "$bin/pg_ctl" -D "$tmp/data" -m fast -w stop >/dev/null
  sleep "${3:-0}"
  # restart on a stopped server starts it with the options it last ran with (postmaster.opts)
  as_pg "$bin/pg_ctl" -D "$tmp/data" -l "$tmp/server.log" -w restart >/dev/null 2>&1
  ;;
*)
  echo "usage: $0 start | stop PG_TMP | restart PG_TMP [SECONDS_DOWN]" >&2
  exit 2
  ;;
esac
