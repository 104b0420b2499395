#!/usr/bin/env bash
# One Redis against a three-master Redis Cluster, in one run, for the rooms fan-out scenario
# (bench/fanout.sh's: 5,000 sockets in 50 rooms of 100, 500 messages/s for 20 s, two release
# gateway nodes and a worker): delivered, latency, the Redis processes' CPU per 100,000
# deliveries, and on the cluster each master's share of the commands (INFO commandstats). Then
# the worker's persisted messages per second on the cluster (`loadgen persist`, as
# bench/worker-throughput.sh does on one Redis) and publish-to-row latency at 1,000 messages/s
# (`loadgen latency`, as bench/persist-latency.sh).
#   bench/cluster.sh [SECONDS]   (default 20)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
cargo build -q --release --bin gateway --bin worker --bin loadgen
ulimit -n "$(ulimit -Hn)"
source bench/lib/stack.sh
# shellcheck source=../scripts/lib/redis-cluster.sh
source scripts/lib/redis-cluster.sh
rooms=(--sockets 5000 --groups 50 --rate 500 --seconds "$seconds")

# Redis CPU per 100k deliveries from loadgen's JSON report: the processes after the gateways'.
redis_cpu() {
  python3 -c 'import json,sys; r=json.loads(sys.argv[1]); n=int(sys.argv[2]); p=r["processes"][2:2+n]
print("redis CPU %.3f s per 100k deliveries (%s)" % (sum(x["cpu_secs"] for x in p)*1e5/max(r["deliveries_received"],1), ", ".join("%.1f s" % x["cpu_secs"] for x in p)))' "$1" "$2"
}

stop_gateways() {
  # shellcheck disable=SC2086 # the pids, one word each
  kill ${GATEWAY_PIDS//,/ } "$WORKER_PID" 2>/dev/null || true
  # shellcheck disable=SC2086
  wait ${GATEWAY_PIDS//,/ } "$WORKER_PID" 2>/dev/null || true
}

echo "== rooms on one Redis"
start_redis
start_gateways
trap 'stop_stack; stop_redis_cluster' EXIT # start_gateways set stop_stack alone
line=$(target/release/loadgen fanout --target gateway --nodes "$GATEWAY_NODES" --api-key $BENCH_KEY \
  --jwt-secret $BENCH_SECRET --pids "$GATEWAY_PIDS" --extra-pids "$REDIS_PID,$WORKER_PID" \
  --tag "$RANDOM$RANDOM" "${rooms[@]}" | tail -n 2)
echo "$line" | tail -n 1
redis_cpu "$(echo "$line" | head -n 1)" 1
stop_gateways

echo "== rooms on a Redis Cluster (three masters, three replicas)"
start_redis_cluster
masters=() all_pids=()
for node in ${REDIS_CLUSTER_NODES//,/ }; do
  port=${node##*:}
  all_pids+=("$(cat "$RC_DIR/$port/redis.pid")")
  if redis-cli -p "$port" role | head -n 1 | grep -q master; then
    masters+=("$port")
  fi
done
# The nodes and the worker on the cluster: REDIS_URL emptied (unset, to them), REDIS_CLUSTER_NODES named.
export REDIS_URL= REDIS_CLUSTER_NODES
start_nodes
redis_pids=$(IFS=,; echo "${all_pids[*]}")

# One rooms run on the cluster with $1 groups. Each master's commands are counted from the moment
# every socket is open to the end of the messages (the sockets' opening and closing, the presence
# commands of the {presence} slot's master, are left out).
cluster_rooms() {
  local out before=() deltas=() i
  out=$(mktemp)
  target/release/loadgen fanout --target gateway --nodes "$GATEWAY_NODES" --api-key $BENCH_KEY \
    --jwt-secret $BENCH_SECRET --pids "$GATEWAY_PIDS" --extra-pids "$redis_pids,$WORKER_PID" \
    --tag "$RANDOM$RANDOM" --sockets 5000 --groups "$1" --rate 500 --seconds "$seconds" >"$out" 2>"$out.err" &
  local loadgen=$!
  until grep -q 'sockets open' "$out.err" 2>/dev/null; do sleep 0.1; done
  for port in "${masters[@]}"; do redis-cli -p "$port" config resetstat >/dev/null; done
  until grep -q 'messages done' "$out.err" 2>/dev/null; do sleep 0.05; done
  for port in "${masters[@]}"; do redis-cli -p "$port" info commandstats >"$RC_DIR/commandstats.$port"; done
  wait $loadgen
  line=$(tail -n 2 "$out")
  rm -f "$out" "$out.err"
  echo "$line" | tail -n 1
  redis_cpu "$(echo "$line" | head -n 1)" "${#all_pids[@]}"
  for port in "${masters[@]}"; do
    python3 -c 'import sys,re
stats={m.group(1): int(m.group(2)) for m in re.finditer(r"cmdstat_([^:]+):calls=(\d+)", sys.stdin.read())}
for skip in ("info", "config|resetstat", "replconf"): stats.pop(skip, None)
top=sorted(stats.items(), key=lambda kv: -kv[1])[:4]
print(sum(stats.values()), " ".join("%s=%d" % kv for kv in top))' <"$RC_DIR/commandstats.$port" >"$RC_DIR/stats.$port"
    deltas+=("$(cut -d' ' -f1 "$RC_DIR/stats.$port")")
  done
  python3 -c 'import sys; d=[int(x) for x in sys.argv[1:]]; t=sum(d) or 1; m=t/len(d)
print("commands per master: " + ", ".join("%d (%.1f %%, %+.0f %% of the mean)" % (x, 100*x/t, 100*(x-m)/m) for x in d))' "${deltas[@]}"
  for port in "${masters[@]}"; do echo "  master $port: $(cut -d' ' -f2- "$RC_DIR/stats.$port")"; done
}
echo "-- 50 rooms of 100 (bench/fanout.sh's rooms)"
cluster_rooms 50
echo "-- 500 rooms of 10 (the same publications over ten times as many groups: 5,000 deliveries/s)"
cluster_rooms 500
stop_gateways

echo "== the worker on the Redis Cluster: a full backlog, then 1,000 messages/s"
target/release/loadgen persist "cluster:$REDIS_CLUSTER_NODES" "$PG_URL" 100000 1 1000 10

echo "== publish-to-row latency on the Redis Cluster, 1,000 messages/s for 20 s"
GATEWAY_REDIS_PREFIX="bench-latency:" WORKER_METRICS_BIND=127.0.0.1:0 target/release/worker >/dev/null &
latency_worker=$!
STACK_PIDS+=("$latency_worker")
target/release/loadgen latency "cluster:$REDIS_CLUSTER_NODES" "$PG_URL" 1000 20 "bench-latency:"

echo "== an idle worker on the Redis Cluster: the commands it sends, over 20 s"
kill "$latency_worker" 2>/dev/null || true
GATEWAY_REDIS_PREFIX="bench-idle:" WORKER_METRICS_BIND=127.0.0.1:0 target/release/worker >/dev/null &
STACK_PIDS+=($!)
sleep 5 # started, its consumer groups made
for port in "${masters[@]}"; do redis-cli -p "$port" config resetstat >/dev/null; done
sleep 20
for port in "${masters[@]}"; do redis-cli -p "$port" info commandstats; done | python3 -c 'import sys,re
stats={}
for m in re.finditer(r"cmdstat_([^:]+):calls=(\d+)", sys.stdin.read()):
    stats[m.group(1)] = stats.get(m.group(1), 0) + int(m.group(2))
# The replicas acknowledge replication every second (REPLCONF): not the worker.
for skip in ("info", "config|resetstat", "replconf"): stats.pop(skip, None)
print("idle worker: %.1f commands/s (%s)" % (sum(stats.values()) / 20, ", ".join("%s %d" % kv for kv in sorted(stats.items()))))'
