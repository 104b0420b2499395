#!/usr/bin/env bash
# Memory per idle socket of the peers, as bench/idle-memory.sh measures the gateway's: one server
# process, COUNT WebSockets held open by the load generator (reading, never sending), its resident
# memory before and after. Sockudo (a Pusher app socket), Socket.IO (an Engine.IO v4 socket, not
# joined to a room) and the floor (a socket in one room); Sockudo and Socket.IO on a private Redis.
#   bench/idle-peers.sh [COUNT]      (default 10000)
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-10000}
cargo build -q --release --bin loadgen
cargo build -q --release --manifest-path bench/peers/floor/Cargo.toml
ulimit -n "$(ulimit -Hn)"
source bench/lib/stack.sh
start_redis
start_sockudo
start_socketio
floor_port=$(free_port)
bench/peers/floor/target/release/floor "127.0.0.1:$floor_port" &
STACK_PIDS+=($!)
floor_pid=$!
until (exec 3<>"/dev/tcp/127.0.0.1/$floor_port") 2>/dev/null; do sleep 0.1; done

# name, pid, WebSocket URL
measure() {
  local name=$1 pid=$2 url=$3 before after line
  rss() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }
  before=$(rss)
  coproc LOAD { target/release/loadgen idle "$url" "$count"; }
  read -r line <&"${LOAD[0]}"
  sleep 2
  after=$(rss)
  echo "$name: $line; RSS ${before} KiB -> ${after} KiB: $(( (after - before) * 1024 / count )) bytes per idle socket"
  exec {LOAD[1]}>&-
  wait "$LOAD_PID" 2>/dev/null || true
}
measure sockudo "${SOCKUDO_PIDS%%,*}" "ws://${SOCKUDO_NODES%%,*}/app/$SOCKUDO_KEY?protocol=7&client=idle&version=1.0"
measure socket.io "${SOCKETIO_PIDS%%,*}" "ws://${SOCKETIO_NODES%%,*}/socket.io/?EIO=4&transport=websocket"
measure floor "$floor_pid" "ws://127.0.0.1:$floor_port/ws/idle"
