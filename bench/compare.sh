#!/usr/bin/env bash
# The same fan-out scenario against two gateway nodes, against two Socket.IO 4 processes with
# the Redis adapter (bench/peers/socketio), and against the floor: one bare WebSocket server with
# its rooms in memory and no Redis (bench/peers/floor, built on first use), one after the other in
# one run on one Redis, and a table of the ratios. The gateway's figures include its worker
# persisting every message to PostgreSQL (reported apart, not counted per delivery); the peers
# persist nothing. Redis CPU per publication is the Redis process's CPU over the messages sent.
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
redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
gateway=$(fanout_gateway --tag "$RANDOM$RANDOM" "${args[@]}" | tail -n 2)
gateway_commands=$(commands_per_publication "$(echo "$gateway" | head -n 1)" gateway)
redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
socketio=$(fanout_socketio "${args[@]}" | tail -n 2)
socketio_commands=$(commands_per_publication "$(echo "$socketio" | head -n 1)" socket.io)
floor=$(target/release/loadgen fanout --target floor --nodes "127.0.0.1:$floor_port" --pids "$floor_pid" \
  --tag "$RANDOM$RANDOM" "${args[@]}" | tail -n 2)
echo "$gateway"
echo "$socketio"
echo "$floor"
echo "$gateway_commands"
echo "$socketio_commands"
python3 - "$(echo "$gateway" | head -n 1)" "$(echo "$socketio" | head -n 1)" "$(echo "$floor" | head -n 1)" <<'PY'
import json, sys
g, s, f = (json.loads(a) for a in sys.argv[1:4])
def servers(r):
    # The nodes: the gateway's and Socket.IO's two, the floor's one (the --pids; the rest are extra).
    return r["processes"][:1] if r["target"] == "floor" else r["processes"][:2]
def per_cpu(r):
    cpu = sum(p["cpu_secs"] for p in servers(r))
    return r["deliveries_received"] / cpu if cpu else 0.0
def redis_us(r):
    # The Redis process follows the nodes in the gateway's and Socket.IO's reports.
    if r["target"] == "floor" or len(r["processes"]) < 3 or not r["messages_sent"]:
        return 0.0
    return r["processes"][2]["cpu_secs"] * 1e6 / r["messages_sent"]
rows = [
    ("deliveries received", *(r["deliveries_received"] for r in (g, s, f))),
    ("lost", *(r["lost"] for r in (g, s, f))),
    ("server CPU s per 100k deliveries", *(r["cpu_secs_per_100k_deliveries"] for r in (g, s, f))),
    ("deliveries per server CPU-second", *(per_cpu(r) for r in (g, s, f))),
    ("Redis CPU µs per publication", *(redis_us(r) for r in (g, s, f))),
    ("latency p50 ms", *(r["latency_ms"]["p50"] for r in (g, s, f))),
    ("latency p99 ms", *(r["latency_ms"]["p99"] for r in (g, s, f))),
    ("latency max ms", *(r["latency_ms"]["max"] for r in (g, s, f))),
    ("peak RSS per node KiB", *(max(p["peak_rss_kib"] for p in servers(r)) for r in (g, s, f))),
]
print("| measure | gateway | socket.io | floor | socket.io / gateway | gateway / floor |")
print("| --- | --- | --- | --- | --- | --- |")
for name, a, b, c in rows:
    ratio = lambda x, y: f"{x / y:.2f}" if y else "-"
    cell = lambda v: f"{v:,.3f}" if isinstance(v, float) else f"{v:,}"
    print(f"| {name} | {cell(a)} | {cell(b)} | {cell(c)} | {ratio(b, a)} | {ratio(a, c)} |")
PY
