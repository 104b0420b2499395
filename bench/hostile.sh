#!/usr/bin/env bash
# Hostile clients against a release gateway in embedded mode with its default limits: idle and
# trickling connections, wrong API keys, and a flood of socket upgrades from one address
# (bench/hostile.py prints one line per case).
#   bench/hostile.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release --bin gateway
ulimit -n "$(ulimit -Hn)"

dir=$(mktemp -d)
trap 'kill $gw 2>/dev/null || true; rm -rf "$dir"' EXIT
export GATEWAY_DATA_DIR=$dir GATEWAY_BIND=127.0.0.1:18766 RUST_LOG=warn
target/release/gateway >/dev/null &
gw=$!
until curl -sf localhost:18766/readyz >/dev/null; do sleep 0.2; done
key=$(cat "$dir/api_key")
api() { curl -sf -X PUT "localhost:18766/api/v1/$1" -H "Authorization: Bearer $key" -H 'Content-Type: application/json' -d "$2" >/dev/null; }
api users/alice '{"username": "alice"}'
api users/bob '{"username": "bob"}'
session=550e8400-e29b-41d4-a716-446655440000
api "sessions/$session" '{"inviter_id": "alice", "invitee_id": "bob"}'
token=$(target/release/gateway token --user alice)
python3 bench/hostile.py 18766 "/ws/sessions/$session/?token=$token"
echo "gateway RSS afterwards: $(awk '/VmRSS/ {print $2}' "/proc/$gw/status") KiB"
