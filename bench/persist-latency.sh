#!/usr/bin/env bash
# Publish-to-row latency at a steady load, in cluster mode: a private PostgreSQL and redis-server
# (AOF on, fsync every second, as the README recommends), one real worker process (release build,
# its default 1 s blocking reads), and `loadgen latency` publishing RATE session messages per
# second for SECONDS the way a gateway does, polling the database every 5 ms.
#   bench/persist-latency.sh [RATE] [SECONDS]   (defaults 1000 30)
# PG_FSYNC=on runs PostgreSQL with fsync and synchronous commits.
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${1:-1000} seconds=${2:-30}
cargo build -q --release --bin loadgen --bin worker

# shellcheck source=../scripts/lib/postgres.sh
source scripts/lib/postgres.sh
start_private_postgres
redis_port=$((port + 1000))
redis_dir=$(mktemp -d)
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly yes --appendfsync everysec \
  --dir "$redis_dir" --daemonize no >/dev/null &
redis_pid=$!
worker_pid=
trap '[ -n "$worker_pid" ] && kill $worker_pid 2>/dev/null && wait $worker_pid 2>/dev/null; kill $redis_pid 2>/dev/null || true; rm -rf "$redis_dir"; stop_pg' EXIT
until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do sleep 0.1; done

REDIS_URL="redis://127.0.0.1:$redis_port/" DATABASE_URL="$PG_URL" GATEWAY_REDIS_PREFIX="bench:" RUST_LOG=warn WORKER_METRICS_BIND=127.0.0.1:0 \
  target/release/worker &
worker_pid=$!
target/release/loadgen latency "redis://127.0.0.1:$redis_port/" "$PG_URL" "$rate" "$seconds" "bench:"
