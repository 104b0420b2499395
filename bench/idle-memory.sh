#!/usr/bin/env bash
# Memory per idle socket: a release gateway in embedded mode, COUNT session sockets held open by
# the load generator, and the gateway's resident memory before and after.
#   bench/idle-memory.sh [COUNT]      (default 8000; GATEWAY_BIN runs another build)
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-8000}
cargo build -q --release --bin gateway --bin loadgen
ulimit -n "$(ulimit -Hn)"   # each socket is a descriptor in both processes

dir=$(mktemp -d)
trap 'kill $gw 2>/dev/null || true; rm -rf "$dir"' EXIT
export GATEWAY_DATA_DIR=$dir GATEWAY_BIND=127.0.0.1:18765 GATEWAY_MAX_SOCKETS_PER_USER=$((count + 1)) RUST_LOG=warn
# One load generator on one address opens every socket: no per-IP limits here.
export GATEWAY_MAX_CONNECTIONS_PER_IP=0 GATEWAY_UPGRADES_PER_IP_PER_SEC=0
"${GATEWAY_BIN:-target/release/gateway}" >/dev/null 2>&1 &
gw=$!
until curl -sf localhost:18765/readyz >/dev/null; do sleep 0.2; done
key=$(cat "$dir/api_key")
api() { curl -sf -X PUT "localhost:18765/api/v1/$1" -H "Authorization: Bearer $key" -H 'Content-Type: application/json' -d "$2" >/dev/null; }
api users/alice '{"username": "alice"}'
api users/bob '{"username": "bob"}'
session=550e8400-e29b-41d4-a716-446655440000
api "sessions/$session" '{"inviter_id": "alice", "invitee_id": "bob"}'
token=$(target/release/gateway token --user alice)

rss() { awk '/VmRSS/ {print $2}' "/proc/$gw/status"; }
before=$(rss)
coproc LOAD { target/release/loadgen idle "ws://127.0.0.1:18765/ws/sessions/$session/?token=$token" "$count"; }
read -r line <&"${LOAD[0]}"
sleep 2
after=$(rss)
echo "$line; gateway RSS ${before} KiB -> ${after} KiB: $(( (after - before) * 1024 / count )) bytes per idle socket"
exec {LOAD[1]}>&-
