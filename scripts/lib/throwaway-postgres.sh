# Sourced by test.sh and bench.sh: starts a throw-away Postgres in $WORK/pg (trust auth, loopback,
# fsync off) and exports HUDDLE_TEST_DATABASE_URL; stops it and removes $WORK on exit.
WORK=$(mktemp -d /tmp/huddle-run.XXXXXX)
chmod 755 "$WORK"
PGBIN=$(dirname "$(ls /usr/lib/postgresql/*/bin/pg_ctl | sort -V | tail -n 1)")
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" stop -m fast >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/pg"
if [ "$(id -u)" = 0 ]; then chown postgres "$WORK/pg"; fi
PGPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg "$PGBIN/initdb" -D "$WORK/pg" -U huddle --auth=trust -E UTF8 >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -w -l "$WORK/pg/server.log" \
  -o "-c listen_addresses=127.0.0.1 -p $PGPORT -c unix_socket_directories='' -c max_connections=300 -c fsync=off" \
  start >/dev/null
export HUDDLE_TEST_DATABASE_URL="postgres://huddle@127.0.0.1:$PGPORT/postgres"
