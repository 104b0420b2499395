#!/usr/bin/env bash
# A before/after comparison of two gateway builds on one fan-out scenario, alternating
# (before, after, before, after) in one run so that the machine's drift hits both alike.
#   bench/ab.sh BEFORE_BINARY AFTER_BINARY [loadgen fanout options...]
#   e.g. bench/ab.sh /tmp/gateway-before target/release/gateway --sockets 10000 --groups 1 --rate 1 --seconds 20
set -euo pipefail
cd "$(dirname "$0")/.."
before=$1 after=$2
shift 2
cargo build -q --release --bin worker --bin loadgen
ulimit -n "$(ulimit -Hn)"
for round in 1 2; do
  for build in before after; do
    binary=$before
    [ "$build" = after ] && binary=$after
    (
      source bench/lib/stack.sh
      export GATEWAY_BIN=$binary
      start_redis
      start_gateways
      echo "== $build (round $round)"
      fanout_gateway --tag "$RANDOM$RANDOM" "$@" | tail -n 1
    ) 2>&1 | grep -v ' WARN '
  done
done
