# Sourced by scripts/test and the benchmarks: starts a private Redis Cluster of six redis-server
# processes (three masters, three replicas, `cluster-node-timeout` 2 s) on free ports in a
# temporary folder. Sets REDIS_CLUSTER_NODES (host:port,...) and RC_DIR; stop_redis_cluster stops
# the servers and removes the folder (the caller puts it in its EXIT trap). Needs Debian's
# redis-server (7.0 or later: sharded pub/sub).

start_redis_cluster() {
  RC_DIR=$(mktemp -d "${TMPDIR:-/tmp}/rtgate-redis-cluster.XXXXXX")
  local ports=() port
  # Ports below the kernel's ephemeral range, and their cluster bus ports (+10000) too.
  for port in $(seq 21000 21999); do
    [ ${#ports[@]} -eq 6 ] && break
    (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue
    (echo >"/dev/tcp/127.0.0.1/$((port + 10000))") 2>/dev/null && continue
    mkdir -p "$RC_DIR/$port"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$RC_DIR/$port" --save "" --appendonly no \
      --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
      --daemonize yes --pidfile "$RC_DIR/$port/redis.pid" --logfile "$RC_DIR/$port/redis.log"
    ports+=("$port")
  done
  local addresses=() i
  for port in "${ports[@]}"; do
    for i in $(seq 50); do
      redis-cli -p "$port" ping >/dev/null 2>&1 && break
      sleep 0.1
    done
    addresses+=("127.0.0.1:$port")
  done
  if ! redis-cli --cluster create "${addresses[@]}" --cluster-replicas 1 --cluster-yes >"$RC_DIR/create.log" 2>&1; then
    echo "could not create the Redis Cluster:" >&2
    tail -n 20 "$RC_DIR/create.log" >&2
    exit 1
  fi
  for port in "${ports[@]}"; do
    for i in $(seq 100); do
      redis-cli -p "$port" cluster info 2>/dev/null | grep -q '^cluster_state:ok' && break
      sleep 0.1
    done
  done
  REDIS_CLUSTER_NODES=$(IFS=,; echo "${addresses[*]}")
}

stop_redis_cluster() {
  [ -n "${RC_DIR:-}" ] || return 0
  local pidfile
  for pidfile in "$RC_DIR"/*/redis.pid; do
    [ -f "$pidfile" ] && kill -9 "$(cat "$pidfile")" 2>/dev/null
  done
  rm -rf "$RC_DIR"
}
