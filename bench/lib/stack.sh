# Shared by the fan-out benchmarks: a private PostgreSQL and redis-server, two release gateway
# nodes and a worker in cluster mode, and the Socket.IO peer's two processes. Sourced from the
# repository root; everything started here is stopped by `stop_stack`, which sourcing this file
# sets as the EXIT trap (an interrupt exits through it too).
# shellcheck source=../../scripts/lib/postgres.sh
source scripts/lib/postgres.sh

STACK_PIDS=()
BENCH_SECRET=bench-jwt-secret
BENCH_KEY=bench-api-key

stop_stack() {
  # Newest first: the nodes and the worker stop while Redis and PostgreSQL are still there.
  local i
  for ((i = ${#STACK_PIDS[@]} - 1; i >= 0; i--)); do
    kill "${STACK_PIDS[i]}" 2>/dev/null || true
    wait "${STACK_PIDS[i]}" 2>/dev/null || true
  done
  [ -n "${redis_dir:-}" ] && rm -rf "$redis_dir"
  declare -F stop_pg >/dev/null && stop_pg
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Redis on a free port (AOF everysec, as the README recommends): sets REDIS_PORT, REDIS_PID.
start_redis() {
  REDIS_PORT=$(free_port)
  redis_dir=$(mktemp -d)
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly yes --appendfsync everysec \
    --dir "$redis_dir" --daemonize no >/dev/null &
  REDIS_PID=$!
  STACK_PIDS+=("$REDIS_PID")
  until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.1; done
}

wait_http() { until curl -sf "$1" >/dev/null 2>&1; do sleep 0.2; done; }

# Two gateway nodes on free ports and a worker: sets GATEWAY_NODES ("host:port,host:port"),
# GATEWAY_PIDS ("a,b") and WORKER_PID.
# GATEWAY_BIN and WORKER_BIN run other builds (a before/after comparison).
# Limits meant for hostile clients are off: one load generator opens every socket from one address.
start_gateways() {
  start_private_postgres
  trap stop_stack EXIT # start_private_postgres set its own; stop_stack stops PostgreSQL too
  export REDIS_URL="redis://127.0.0.1:$REDIS_PORT/" DATABASE_URL="$PG_URL" JWT_SECRET=$BENCH_SECRET \
    GATEWAY_API_KEY=$BENCH_KEY GATEWAY_MAX_CONNECTIONS_PER_IP=0 GATEWAY_UPGRADES_PER_IP_PER_SEC=0 \
    GATEWAY_RATE_PER_SEC=100000 GATEWAY_RATE_BURST=100000 RUST_LOG=warn
  start_nodes
}

# Two gateway nodes and a worker on whatever Redis the environment names (REDIS_URL or
# REDIS_CLUSTER_NODES), as start_gateways leaves it set up: sets the same variables.
start_nodes() {
  local pids=() nodes=() port
  for _ in 1 2; do
    port=$(free_port)
    GATEWAY_BIND=127.0.0.1:$port "${GATEWAY_BIN:-target/release/gateway}" >/dev/null &
    pids+=($!)
    STACK_PIDS+=($!)
    nodes+=("127.0.0.1:$port")
    wait_http "127.0.0.1:$port/readyz"
  done
  GATEWAY_PIDS=$(IFS=,; echo "${pids[*]}")
  GATEWAY_NODES=$(IFS=,; echo "${nodes[*]}")
  WORKER_METRICS_BIND=127.0.0.1:0 "${WORKER_BIN:-target/release/worker}" >/dev/null &
  WORKER_PID=$!
  STACK_PIDS+=("$WORKER_PID")
}

# The Socket.IO peer (bench/peers/socketio) as two processes on the same Redis, on free ports:
# sets SOCKETIO_NODES and SOCKETIO_PIDS. Installs its npm packages on first use.
start_socketio() {
  local dir=bench/peers/socketio
  [ -d "$dir/node_modules" ] || (cd "$dir" && npm ci --no-audit --no-fund --silent)
  local pids=() nodes=() port
  for _ in 1 2; do
    port=$(free_port)
    PORT=$port REDIS_URL="redis://127.0.0.1:$REDIS_PORT" node "$dir/server.js" >/dev/null &
    pids+=($!)
    STACK_PIDS+=($!)
    nodes+=("127.0.0.1:$port")
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do sleep 0.2; done
  done
  SOCKETIO_PIDS=$(IFS=,; echo "${pids[*]}")
  SOCKETIO_NODES=$(IFS=,; echo "${nodes[*]}")
}

SOCKUDO_KEY=bench-key
SOCKUDO_SECRET=bench-secret

# Sockudo 5.2 (Rust, Pusher protocol, Redis adapter) as two processes on the same Redis, on free
# ports: sets SOCKUDO_NODES and SOCKUDO_PIDS. Built on first use into bench/peers/sockudo/.bin
# (a long build; it needs Debian's protobuf-compiler). One default app with client events on and
# no limits in the way: the rate limiter off, connections and client events per second far above
# the scenarios'. Its cache is Redis (its cluster mode requires it); its metrics are off.
start_sockudo() {
  local root=bench/peers/sockudo/.bin bin=bench/peers/sockudo/.bin/bin/sockudo
  if [ ! -x "$bin" ]; then
    command -v protoc >/dev/null || apt-get install -y -qq protobuf-compiler >/dev/null ||
      { echo "Sockudo needs protoc: install the Debian package protobuf-compiler" >&2; exit 1; }
    cargo install -q sockudo --version 5.2.0 --locked --no-default-features --features v2,redis --root "$root"
  fi
  local pids=() nodes=() port dir
  for _ in 1 2; do
    port=$(free_port)
    dir=$(mktemp -d) # its working directory: no config/ file of anyone's is picked up
    (cd "$dir" && HOST=127.0.0.1 PORT=$port ADAPTER_DRIVER=redis CACHE_DRIVER=redis QUEUE_DRIVER=memory \
      REDIS_URL="redis://127.0.0.1:$REDIS_PORT/" RATE_LIMITER_ENABLED=false METRICS_ENABLED=false \
      SOCKUDO_DEFAULT_APP_ID=bench SOCKUDO_DEFAULT_APP_KEY=$SOCKUDO_KEY SOCKUDO_DEFAULT_APP_SECRET=$SOCKUDO_SECRET \
      SOCKUDO_ENABLE_CLIENT_MESSAGES=true SOCKUDO_DEFAULT_APP_MAX_CONNECTIONS=1000000 \
      SOCKUDO_DEFAULT_APP_MAX_CLIENT_EVENTS_PER_SECOND=1000000 RUST_LOG=warn \
      exec "$OLDPWD/$bin" >/dev/null 2>&1) &
    pids+=($!)
    STACK_PIDS+=($!)
    nodes+=("127.0.0.1:$port")
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do sleep 0.2; done
  done
  SOCKUDO_PIDS=$(IFS=,; echo "${pids[*]}")
  SOCKUDO_NODES=$(IFS=,; echo "${nodes[*]}")
}

# loadgen fanout against the gateway nodes; extra arguments go to loadgen.
fanout_gateway() {
  target/release/loadgen fanout --target gateway --nodes "$GATEWAY_NODES" \
    --api-key $BENCH_KEY --jwt-secret $BENCH_SECRET --pids "$GATEWAY_PIDS" \
    --extra-pids "$REDIS_PID,$WORKER_PID" "$@"
}

fanout_sockudo() {
  target/release/loadgen fanout --target sockudo --nodes "$SOCKUDO_NODES" --app-key $SOCKUDO_KEY \
    --app-secret $SOCKUDO_SECRET --pids "$SOCKUDO_PIDS" --extra-pids "$REDIS_PID" "$@"
}

fanout_socketio() {
  target/release/loadgen fanout --target socketio --nodes "$SOCKETIO_NODES" \
    --pids "$SOCKETIO_PIDS" --extra-pids "$REDIS_PID" "$@"
}

trap stop_stack EXIT
trap "exit 1" INT TERM
