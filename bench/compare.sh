#!/usr/bin/env bash
# The same fan-out scenario against two gateway nodes, against two Sockudo 5.2 processes with
# its Redis adapter (Pusher protocol; built on first use, see stack.sh), against two Socket.IO 4
# processes with the Redis adapter (bench/peers/socketio), and against the floor: one bare
# WebSocket server with its rooms in memory and no Redis (bench/peers/floor, built on first use),
# one after the other in one run on one Redis, and a table of the ratios. The gateway's figures
# include its worker persisting every message to PostgreSQL (reported apart, not counted per
# delivery); the peers persist nothing. Sockudo does not echo a client event to its sender, so
# each of its messages has one delivery fewer (loadgen counts accordingly). Redis CPU per
# publication is the Redis process's CPU over the messages sent.
#   bench/compare.sh [SOCKETS] [GROUPS] [RATE] [SECONDS]   (defaults 5000 50 500 20)
set -euo pipefail
cd "$(dirname "$0")/.."
sockets=${1:-5000} groups=${2:-50} rate=${3:-500} seconds=${4:-20}
cargo build -q --release --bin gateway --bin worker --bin loadgen
cargo build -q --release --manifest-path bench/peers/floor/Cargo.toml
ulimit -n "$(ulimit -Hn)"
source bench/lib/stack.sh
start_redis
start_gateways
start_sockudo
start_socketio
floor_port=$(free_port)
bench/peers/floor/target/release/floor "127.0.0.1:$floor_port" &
floor_pid=$!
STACK_PIDS+=("$floor_pid")
until (exec 3<>"/dev/tcp/127.0.0.1/$floor_port") 2>/dev/null; do sleep 0.1; done
args=(--sockets "$sockets" --groups "$groups" --rate "$rate" --seconds "$seconds")
# What each server asks of Redis per publication, by command (INFO commandstats over its run).
commands_per_publication() {
  redis-cli -p "$REDIS_PORT" info commandstats | python3 -c 'import sys,re,json
sent=json.loads(sys.argv[1])["messages_sent"] or 1
stats={m.group(1): int(m.group(2)) for m in re.finditer(r"cmdstat_([^:]+):calls=(\d+)", sys.stdin.read())}
for skip in ("info", "config|resetstat"): stats.pop(skip, None)
top=sorted(stats.items(), key=lambda kv: -kv[1])
print("%s: Redis commands per publication %.2f (%s)" % (sys.argv[2], sum(stats.values())/sent, ", ".join("%s %.2f" % (k, v/sent) for k, v in top[:8])))' "$1" "$2"
}
run() { # name, then the command printing a report
  local name=$1 report
  shift
  redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
  report=$("$@" "${args[@]}" | tail -n 2)
  echo "$report" >"$reports/$name"
  commands_per_publication "$(echo "$report" | head -n 1)" "$name" >"$reports/$name.commands"
}
reports=$(mktemp -d)
run gateway fanout_gateway --tag "$RANDOM$RANDOM"
run sockudo fanout_sockudo --tag "$RANDOM$RANDOM"
run socket.io fanout_socketio
run floor target/release/loadgen fanout --target floor --nodes "127.0.0.1:$floor_port" --pids "$floor_pid" \
  --tag "$RANDOM$RANDOM"
for name in gateway sockudo socket.io floor; do cat "$reports/$name"; done
for name in gateway sockudo socket.io; do cat "$reports/$name.commands"; done
python3 - "$reports" <<'PY'
import json, sys
names = ["gateway", "sockudo", "socket.io", "floor"]
r = {n: json.loads(open(f"{sys.argv[1]}/{n}").readline()) for n in names}
def servers(x):
    # The nodes: two each, the floor's one (the --pids; the rest are extra).
    return x["processes"][:1] if x["target"] == "floor" else x["processes"][:2]
def per_cpu(x):
    cpu = sum(p["cpu_secs"] for p in servers(x))
    return x["deliveries_received"] / cpu if cpu else 0.0
def redis_us(x):
    # The Redis process follows the nodes in every report but the floor's.
    if x["target"] == "floor" or len(x["processes"]) < 3 or not x["messages_sent"]:
        return 0.0
    return x["processes"][2]["cpu_secs"] * 1e6 / x["messages_sent"]
rows = [
    ("deliveries received / expected", *(f'{x["deliveries_received"]:,} / {x["deliveries_expected"]:,}' for x in r.values())),
    ("server CPU s per 100k deliveries", *(x["cpu_secs_per_100k_deliveries"] for x in r.values())),
    ("deliveries per server CPU-second", *(per_cpu(x) for x in r.values())),
    ("Redis CPU µs per publication", *(redis_us(x) for x in r.values())),
    ("latency p50 ms", *(x["latency_ms"]["p50"] for x in r.values())),
    ("latency p99 ms", *(x["latency_ms"]["p99"] for x in r.values())),
    ("latency max ms", *(x["latency_ms"]["max"] for x in r.values())),
    ("peak RSS per node KiB", *(max(p["peak_rss_kib"] for p in servers(x)) for x in r.values())),
]
print("| measure | gateway | sockudo | socket.io | floor | sockudo / gateway | socket.io / gateway | gateway / floor |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
ratio = lambda x, y: f"{x / y:.2f}" if isinstance(x, float) and y else "-"
cell = lambda v: f"{v:,.3f}" if isinstance(v, float) else (f"{v:,}" if isinstance(v, int) else v)
for name, g, k, s, f in rows:
    print(f"| {name} | {cell(g)} | {cell(k)} | {cell(s)} | {cell(f)} | {ratio(k, g)} | {ratio(s, g)} | {ratio(g, f)} |")
PY
rm -rf "$reports"
