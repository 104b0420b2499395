#!/usr/bin/env bash
# The same fan-out scenario against two gateway nodes and against two Socket.IO 4 processes with
# the Redis adapter (bench/peers/socketio), one after the other in one run on one Redis, and a
# table of the ratios. The gateway's figures include its worker persisting every message to
# PostgreSQL (reported apart, not counted per delivery); the peer persists nothing.
#   bench/compare.sh [SOCKETS] [GROUPS] [RATE] [SECONDS]   (defaults 5000 50 500 20)
set -euo pipefail
cd "$(dirname "$0")/.."
sockets=${1:-5000} groups=${2:-50} rate=${3:-500} seconds=${4:-20}
cargo build -q --release --bin gateway --bin worker --bin loadgen
ulimit -n "$(ulimit -Hn)"
source bench/lib/stack.sh
start_redis
start_gateways
start_socketio
args=(--sockets "$sockets" --groups "$groups" --rate "$rate" --seconds "$seconds")
gateway=$(fanout_gateway --tag "$RANDOM$RANDOM" "${args[@]}" | tail -n 2)
socketio=$(fanout_socketio "${args[@]}" | tail -n 2)
echo "$gateway"
echo "$socketio"
python3 - "$(echo "$gateway" | head -n 1)" "$(echo "$socketio" | head -n 1)" <<'PY'
import json, sys
g, s = json.loads(sys.argv[1]), json.loads(sys.argv[2])
def per_cpu(r):
    cpu = sum(p["cpu_secs"] for p in r["processes"][:2])
    return r["deliveries_received"] / cpu if cpu else 0.0
rows = [
    ("deliveries received", g["deliveries_received"], s["deliveries_received"]),
    ("lost", g["lost"], s["lost"]),
    ("server CPU s per 100k deliveries", g["cpu_secs_per_100k_deliveries"], s["cpu_secs_per_100k_deliveries"]),
    ("deliveries per server CPU-second", per_cpu(g), per_cpu(s)),
    ("latency p50 ms", g["latency_ms"]["p50"], s["latency_ms"]["p50"]),
    ("latency p99 ms", g["latency_ms"]["p99"], s["latency_ms"]["p99"]),
    ("latency max ms", g["latency_ms"]["max"], s["latency_ms"]["max"]),
    ("peak RSS per node KiB", max(p["peak_rss_kib"] for p in g["processes"][:2]), max(p["peak_rss_kib"] for p in s["processes"][:2])),
]
print(f"| measure | gateway | socket.io | socket.io / gateway |")
print(f"| --- | --- | --- | --- |")
for name, a, b in rows:
    ratio = f"{b / a:.2f}" if a else "-"
    print(f"| {name} | {a:,.3f} | {b:,.3f} | {ratio} |" if isinstance(a, float) else f"| {name} | {a:,} | {b:,} | {ratio} |")
PY
