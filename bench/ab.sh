#!/usr/bin/env bash
# A before/after comparison of two builds on one fan-out scenario, alternating (before, after,
# before, after) in one run so that the machine's drift hits both alike. BEFORE and AFTER are
# each a gateway binary (the worker is this tree's), or a directory holding a `gateway` and a
# `worker` (both compared). After each run: Redis's CPU per publication and its commands per
# publication (INFO commandstats over the run, the sockets' admissions included).
#   bench/ab.sh BEFORE AFTER [loadgen fanout options...]
#   e.g. bench/ab.sh /tmp/gateway-before target/release/gateway --sockets 10000 --groups 1 --rate 1 --seconds 20
#        bench/ab.sh /tmp/before target/release --sockets 5000 --groups 50 --rate 500 --seconds 20
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
      if [ -d "$binary" ]; then
        export GATEWAY_BIN=$binary/gateway WORKER_BIN=$binary/worker
      else
        export GATEWAY_BIN=$binary
      fi
      start_redis
      start_gateways
      echo "== $build (round $round)"
      redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
      report=$(fanout_gateway --tag "$RANDOM$RANDOM" "$@" | tail -n 2)
      echo "$report" | tail -n 1
      redis-cli -p "$REDIS_PORT" info commandstats | python3 -c 'import sys,re,json
r=json.loads(sys.argv[1]); sent=r["messages_sent"] or 1
stats={m.group(1): int(m.group(2)) for m in re.finditer(r"cmdstat_([^:]+):calls=(\d+)", sys.stdin.read())}
for skip in ("info", "config|resetstat"): stats.pop(skip, None)
top=sorted(stats.items(), key=lambda kv: -kv[1])
print("Redis CPU %.1f us per publication; commands per publication %.2f (%s)" % (r["processes"][2]["cpu_secs"]*1e6/sent, sum(stats.values())/sent, ", ".join("%s %.2f" % (k, v/sent) for k, v in top[:8])))' "$(echo "$report" | head -n 1)"
    ) 2>&1 | grep -v ' WARN '
  done
done
