# Sourced by scripts/test and the benchmarks: starts a private PostgreSQL in a temporary folder on
# a free port, stopped (and the folder removed) when the calling script exits. Sets PG_URL and
# PG_DIR. Needs Debian's postgresql package. Durability is off (fsync, synchronous_commit) unless
# PG_FSYNC=on: tests and the default benchmark measure code paths, not the disk.
pg_bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

start_private_postgres() {
  # A private PostgreSQL: its own folder and port, fast and disposable.
  local durability="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  [ "${PG_FSYNC:-off}" = on ] && durability="-c fsync=on -c synchronous_commit=on"
  PG_BINDIR=$(pg_bindir)
  PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/rtgate-test-pg.XXXXXX")
  as_pg=()
  if [ "$(id -u)" -eq 0 ]; then
    # PostgreSQL refuses to run as root.
    chown postgres: "$PG_DIR"
    as_pg=(runuser -u postgres --)
  fi
  stop_pg() {
    "${as_pg[@]}" "$PG_BINDIR/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$PG_DIR"
  }
  trap stop_pg EXIT

  "${as_pg[@]}" "$PG_BINDIR/initdb" -D "$PG_DIR/data" -U postgres -A trust --no-sync >/dev/null
  # Ports below the kernel's ephemeral range (32768+), so that no client connection holds ours;
  # the next one is tried if a port is taken.
  started=
  for port in $(seq 25432 25532); do
    (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue
    if "${as_pg[@]}" "$PG_BINDIR/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w \
      -o "-p $port -k $PG_DIR -c listen_addresses=127.0.0.1 $durability -c max_connections=400" \
      start >/dev/null; then
      started=1
      break
    fi
  done
  if [ -z "$started" ]; then
    echo "could not start a private PostgreSQL:" >&2
    tail -n 5 "$PG_DIR/server.log" >&2
    exit 1
  fi

  PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
}
