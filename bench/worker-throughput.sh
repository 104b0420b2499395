#!/usr/bin/env bash
# Worker throughput on PostgreSQL, and its lag under a steady load. Starts a private PostgreSQL
# and redis-server, then `loadgen persist` (release build): a burst of MESSAGES session messages
# drained by WORKERS workers, then RATE messages/s for SECONDS.
#   bench/worker-throughput.sh [MESSAGES] [WORKERS] [RATE] [SECONDS]   (defaults 200000 2 10000 20)
set -euo pipefail
cd "$(dirname "$0")/.."
messages=${1:-200000} workers=${2:-2} rate=${3:-10000} seconds=${4:-20}
cargo build -q --release --bin loadgen

# shellcheck source=../scripts/lib/postgres.sh
source scripts/lib/postgres.sh
start_private_postgres
redis_port=$((port + 1000))
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no >/dev/null &
redis_pid=$!
trap 'kill $redis_pid 2>/dev/null || true; stop_pg' EXIT
until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do sleep 0.1; done

target/release/loadgen persist "redis://127.0.0.1:$redis_port/" "$PG_URL" "$messages" "$workers" "$rate" "$seconds"
