#!/usr/bin/env bash
# A Redis Cluster master SIGKILLed under the fault suite's counting chat load (100 messages/s,
# two nodes, a worker; the killed node restarted a second later, as a supervisor would), with
# GATEWAY_REDIS_REPLICA_ACKS=0 and =1, RUNS times each: lost, refused, and how long until every
# node is ready again (tests/tests/e2e/cluster_faults.rs, which asserts nothing echoed is lost
# with acks 1). Then the slot-migration fault. Needs GATEWAY_TEST_DATABASE_URL, as scripts/test
# sets it (a private PostgreSQL is started when it is unset).
#   bench/cluster-failover.sh [RUNS]   (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
if [ -z "${GATEWAY_TEST_DATABASE_URL:-}" ]; then
  # shellcheck source=../scripts/lib/postgres.sh
  source scripts/lib/postgres.sh
  start_private_postgres
  export GATEWAY_TEST_DATABASE_URL="$PG_URL"
fi
cargo test -q -p e2e --test e2e --no-run
for acks in 0 1; do
  for _ in $(seq "$runs"); do
    E2E_FAILOVER_REPLICA_ACKS=$acks cargo test -q -p e2e --test e2e -- --exact \
      cluster_faults::a_redis_cluster_master_killed_under_load --nocapture 2>&1 | grep '^fault' || true
  done
done
for _ in $(seq "$runs"); do
  cargo test -q -p e2e --test e2e -- --exact cluster_faults::a_redis_cluster_slot_migrated_under_load --nocapture 2>&1 |
    grep '^fault' || true
done
