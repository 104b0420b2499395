#!/usr/bin/env bash
# The fan-out scenarios against two release gateway nodes (cluster mode: a private Redis and
# PostgreSQL, a worker persisting every chat message), driven by `loadgen fanout` over the chat
# socket. One JSON line and one summary line per run.
#   bench/fanout.sh [loadgen|rooms|ceiling|broadcast|slow|burst|storm|all]   (default all)
# loadgen: the load generator's own receive path on one thread (no servers): frames per CPU-second.
# rooms: 5,000 sockets in 50 rooms of 100, 500 messages/s (50,000 deliveries/s) for 20 s.
# ceiling: the same rooms at rising rates until loss, a 1013 close or p99 over 100 ms.
# broadcast: 10,000 sockets in one group, one message per second for 20 s.
# slow: rooms with 10 % of the sockets not reading (they should be closed 1013). Those sockets
#   hold a 4 KiB receive buffer (a thin link), and the nodes run with a 16 KiB send buffer and a
#   64-frame outbox (below), so that a stalled socket is found within the scenario's 20 s at its
#   10 frames/s; with Linux's autotuning the kernel alone would hold ~12,000 such frames.
# burst: 1,000 sockets in one group, 200 messages/s for 20 s (200,000 deliveries/s: frames queue
#   behind each socket, where writing what waits with one flush pays).
# storm: 10,000 sockets reconnect within 5 s with `?since=` (as after a drain): all admitted?
#   admission time p50/p99, Redis commands per admission (loadgen storm).
# Memory per idle socket: bench/idle-memory.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
scenario=${1:-all}
cargo build -q --release --bin gateway --bin worker --bin loadgen
ulimit -n "$(ulimit -Hn)"
case $scenario in loadgen | all) echo "== loadgen"; target/release/loadgen receive-rate 8 500000 | tail -n 2 ;; esac
[ "$scenario" = loadgen ] && exit 0
export GATEWAY_SEND_BUFFER_BYTES=16384 GATEWAY_OUTBOX_FRAMES=64
source bench/lib/stack.sh
start_redis
start_gateways

run() { echo "== $1"; shift; fanout_gateway --tag "$RANDOM$RANDOM" "$@" | tail -n 2; }
case $scenario in rooms | all) run rooms --sockets 5000 --groups 50 --rate 500 --seconds 20 ;; esac
case $scenario in slow | all) run slow --sockets 5000 --groups 50 --rate 500 --seconds 20 --slow 0.1 ;; esac
case $scenario in broadcast | all) run broadcast --sockets 10000 --groups 1 --rate 1 --seconds 20 ;; esac
case $scenario in burst | all) run burst --sockets 1000 --groups 1 --rate 200 --seconds 20 ;; esac
case $scenario in storm | all)
  echo "== storm"
  target/release/loadgen storm --within 5 --redis "redis://127.0.0.1:$REDIS_PORT/" --nodes "$GATEWAY_NODES" \
    --api-key $BENCH_KEY --jwt-secret $BENCH_SECRET --tag "$RANDOM$RANDOM" --sockets 10000 --groups 100 | tail -n 2
  ;;
esac
case $scenario in ceiling | all)
  for rate in 1000 2000 3000 4000 6000 8000; do
    line=$(fanout_gateway --tag "$RANDOM$RANDOM" --sockets 5000 --groups 50 --rate "$rate" --seconds 10 | tail -n 2)
    echo "== ceiling $rate msg/s"
    echo "$line"
    json=$(echo "$line" | head -n 1)
    if ! python3 -c 'import json,sys; r=json.loads(sys.argv[1]); sys.exit(0 if r["lost"]==0 and "1013" not in r["close_codes"] and r["latency_ms"]["p99"]<=100 else 1)' "$json"; then
      echo "ceiling: not clean at $rate msg/s"
      break
    fi
  done
  ;;
esac
