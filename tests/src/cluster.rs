//! Gateway nodes in-process (the binary's own `Gateway::build`) sharing Redis and a database, with workers; tokens.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use gateway::{Gateway, LocalSockets};
use redis::cluster_routing::{MultipleNodeRoutingInfo, Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use serde_json::{json, Value};
use shared::auth::JwtKey;
use shared::broker::RedisBroker;
use shared::config::{GatewayConfig, GroupWindow, Limits};
use shared::connection::{Commands, Conn, RedisTarget};
use shared::event::Group;
use shared::keys::{Keys, BUCKETS};
use shared::store::Store;
use tokio_util::sync::CancellationToken;

use crate::{answers_200, free_port, http, Process, RedisServer, TestDb, HANG_GUARD};

/// One in-process gateway node.
pub struct Node {
    pub addr: SocketAddr,
    /// The node's sockets, readable after it started serving.
    pub sockets: LocalSockets,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Node {
    pub async fn start(config: GatewayConfig) -> Self {
        let gateway = Gateway::build(config).await.expect("building a gateway node");
        let addr = gateway.local_addr();
        let sockets = gateway.local_sockets();
        let stop = CancellationToken::new();
        let signal = stop.clone();
        let task = tokio::spawn(async move {
            gateway.run(async move { signal.cancelled().await }).await.expect("gateway run");
        });
        Self { addr, sockets, stop, task: Some(task) }
    }

    /// Drains the node (sockets close with 1012) and waits for it to finish.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// A counter or gauge from this node's `/metrics`, summed over its labels.
    pub async fn metric(&self, name: &str) -> i64 {
        let (_, body) = http("GET", &self.http("/metrics"), None, None).await;
        let text = body.as_str().unwrap_or_default().to_owned();
        text.lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(name)?;
                let value = match rest.strip_prefix('{') {
                    Some(labelled) => labelled.split_once("} ")?.1,
                    None => rest.strip_prefix(' ')?,
                };
                value.trim().parse::<f64>().ok()
            })
            .sum::<f64>() as i64
    }

    pub fn ws(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub const JWT_SECRET: &str = "test-secret-0123456789";
pub const API_KEY: &str = "test-api-key";

/// The suite's switch to a Redis Cluster: `scripts/test` starts one and runs the core flows a
/// second time with its seed nodes here. Unset: every test starts a Redis of its own.
pub const REDIS_CLUSTER_ENV: &str = "GATEWAY_TEST_REDIS_CLUSTER";

/// The Redis Cluster the suite runs on, if `REDIS_CLUSTER_ENV` names one.
pub fn suite_redis_cluster() -> Option<RedisTarget> {
    let nodes = std::env::var(REDIS_CLUSTER_ENV).ok()?;
    Some(
        RedisTarget::cluster_from_list(&nodes).unwrap_or_else(|| panic!("{REDIS_CLUSTER_ENV}={nodes:?} names no node")),
    )
}

/// One Redis process's channels (see `Cluster::channels`).
#[derive(Debug, Default)]
pub struct RedisChannels {
    /// The master's address, or "the redis-server".
    pub redis: String,
    pub classic: Vec<String>,
    pub sharded: Vec<String>,
}

/// The Redis a test runs on: the suite's Redis Cluster when `REDIS_CLUSTER_ENV` names one, else
/// a private redis-server (kept here: dropping it stops it).
pub struct TestRedis {
    pub server: Option<RedisServer>,
    pub target: RedisTarget,
}

impl TestRedis {
    pub async fn start() -> Self {
        match suite_redis_cluster() {
            Some(target) => Self { server: None, target },
            None => {
                let server = RedisServer::start().await;
                let target = RedisTarget::Single(server.url());
                Self { server: Some(server), target }
            }
        }
    }
}

/// Redis, a database, gateway nodes and workers sharing them.
pub struct Cluster {
    /// A private redis-server; `None` on the suite's Redis Cluster.
    redis_server: Option<RedisServer>,
    /// Where the nodes and workers connect.
    target: RedisTarget,
    /// `GATEWAY_REDIS_REPLICA_ACKS` of the nodes and workers.
    replica_acks: u32,
    pub db: TestDb,
    pub prefix: String,
    pub limits: Limits,
    /// Each group's window in Redis, as the nodes are configured (`GATEWAY_GROUP_WINDOW`).
    pub window: GroupWindow,
    pub nodes: Vec<Node>,
    workers: Vec<CancellationToken>,
}

impl Cluster {
    pub async fn start(nodes: usize) -> Self {
        Self::start_with(nodes, Limits::default()).await
    }

    pub async fn start_with(nodes: usize, limits: Limits) -> Self {
        Self::start_on(nodes, limits, TestDb::create().await).await
    }

    /// A cluster whose database is `db` (on a server the test controls).
    pub async fn start_on(nodes: usize, limits: Limits, db: TestDb) -> Self {
        Self::start_on_redis(nodes, limits, db, TestRedis::start().await, 0).await
    }

    /// A cluster on `redis` (a Redis Cluster the test breaks, say), whose nodes and workers wait
    /// for `replica_acks` replicas on each publication (`GATEWAY_REDIS_REPLICA_ACKS`).
    pub async fn start_on_redis(nodes: usize, limits: Limits, db: TestDb, redis: TestRedis, replica_acks: u32) -> Self {
        let TestRedis { server: redis_server, target } = redis;
        let prefix = format!("t{}:", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let mut cluster = Self {
            redis_server,
            target,
            replica_acks,
            db,
            prefix,
            limits,
            window: GroupWindow::default(),
            nodes: Vec::new(),
            workers: Vec::new(),
        };
        for _ in 0..nodes {
            cluster.add_node().await;
        }
        cluster
    }

    /// A cluster whose nodes keep `window` of each group's publications in Redis.
    pub async fn start_windowed(nodes: usize, limits: Limits, window: GroupWindow) -> Self {
        let mut cluster = Self::start_with(0, limits).await;
        cluster.window = window;
        for _ in 0..nodes {
            cluster.add_node().await;
        }
        cluster
    }

    /// The test's own redis-server, to stop, freeze or restart. Such a test runs on a single
    /// Redis only (scripts/test leaves it out of the Redis Cluster pass).
    pub fn redis(&mut self) -> &mut RedisServer {
        self.redis_server.as_mut().expect("this test controls its own redis-server: it runs on a single Redis only")
    }

    /// Where the nodes and workers connect: the test's redis-server or the suite's cluster.
    pub fn target(&self) -> &RedisTarget {
        &self.target
    }

    /// A broker on this cluster's Redis, for a test's own publishing and reading.
    pub fn broker(&self) -> RedisBroker {
        RedisBroker::new(&self.target, &self.prefix).expect("a broker").with_replica_acks(self.replica_acks)
    }

    /// A connection for reading Redis directly, as an operator would.
    pub async fn redis_conn(&self) -> Conn {
        Commands::new(&self.target).expect("redis commands").conn().await.expect("a redis connection")
    }

    /// How many rooms the nodes' room sets list, over every node Redis knows (`SCARD` of
    /// `{presence}:rooms:<node>`).
    pub async fn rooms_listed(&self) -> usize {
        let keys = Keys::new(&self.prefix);
        let mut conn = self.redis_conn().await;
        let nodes: Vec<String> =
            redis::cmd("ZRANGE").arg(keys.presence_nodes()).arg(0).arg(-1).query_async(&mut conn).await.unwrap();
        let mut listed = 0;
        for node in nodes {
            let count: usize = redis::cmd("SCARD").arg(keys.rooms_of(&node)).query_async(&mut conn).await.unwrap();
            listed += count;
        }
        listed
    }

    /// Jobs read by the worker `consumer` and not acked yet, over every bucket's stream.
    pub async fn pending_jobs_of(&self, consumer: &str) -> usize {
        let keys = Keys::new(&self.prefix);
        let mut conn = self.redis_conn().await;
        let mut pending = 0;
        for bucket in 0..BUCKETS {
            let entries: Vec<redis::Value> = redis::cmd("XPENDING")
                .arg(keys.jobs_stream(bucket))
                .arg("workers")
                .arg("-")
                .arg("+")
                .arg(10_000)
                .arg(consumer)
                .query_async(&mut conn)
                .await
                .unwrap_or_default();
            pending += entries.len();
        }
        pending
    }

    /// The consumers of the workers' group, over every bucket's stream (`XINFO CONSUMERS`).
    pub async fn job_consumers(&self) -> std::collections::BTreeSet<String> {
        let keys = Keys::new(&self.prefix);
        let mut conn = self.redis_conn().await;
        let mut names = std::collections::BTreeSet::new();
        for bucket in 0..BUCKETS {
            let consumers: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
                .arg("CONSUMERS")
                .arg(keys.jobs_stream(bucket))
                .arg("workers")
                .query_async(&mut conn)
                .await
                .unwrap_or_default();
            for consumer in consumers {
                if let Some(name) = consumer.get("name").and_then(|n| redis::from_redis_value::<String>(n.clone()).ok())
                {
                    names.insert(name);
                }
            }
        }
        names
    }

    /// Jobs read by a worker and not acked yet, over every bucket's stream (`XPENDING`).
    pub async fn pending_jobs(&self) -> i64 {
        let keys = Keys::new(&self.prefix);
        let mut conn = self.redis_conn().await;
        let mut pending = 0;
        for bucket in 0..BUCKETS {
            let summary: redis::Value = redis::cmd("XPENDING")
                .arg(keys.jobs_stream(bucket))
                .arg("workers")
                .query_async(&mut conn)
                .await
                .unwrap_or(redis::Value::Nil);
            if let redis::Value::Array(items) = summary {
                if let Some(redis::Value::Int(n)) = items.first() {
                    pending += n;
                }
            }
        }
        pending
    }

    /// How many connections are subscribed to `group`'s channel, seen from Redis as an operator
    /// would: `PUBSUB NUMSUB` on one Redis, `PUBSUB SHARDNUMSUB` on the master of its slot.
    pub async fn subscribers(&self, group: &Group) -> i64 {
        let channel = Keys::new(&self.prefix).channel(group);
        let reply: (String, i64) = match self.redis_conn().await {
            Conn::Cluster(mut conn) => {
                let route = Route::with_key(&channel, SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                let mut numsub = redis::cmd("PUBSUB");
                numsub.arg("SHARDNUMSUB").arg(&channel);
                let value = conn.route_command(numsub, routing).await.expect("PUBSUB SHARDNUMSUB");
                redis::from_redis_value(value).expect("a channel and a count")
            }
            mut conn => redis::cmd("PUBSUB").arg("NUMSUB").arg(&channel).query_async(&mut conn).await.unwrap(),
        };
        reply.1
    }

    /// The pub/sub channels of this cluster's prefix matching `pattern` (after the prefix), as an
    /// operator lists them: per Redis (one entry on a single Redis, one per master on a cluster),
    /// the classic ones (`PUBSUB CHANNELS`) and the sharded ones (`PUBSUB SHARDCHANNELS`).
    pub async fn channels(&self, pattern: &str) -> Vec<RedisChannels> {
        let pattern = format!("{}{pattern}", self.prefix);
        let ask = |sub: &str| {
            let mut cmd = redis::cmd("PUBSUB");
            cmd.arg(sub).arg(&pattern);
            cmd
        };
        match self.redis_conn().await {
            Conn::Cluster(mut conn) => {
                let mut per_master: Vec<RedisChannels> = Vec::new();
                for (sub, sharded) in [("CHANNELS", false), ("SHARDCHANNELS", true)] {
                    let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
                    let reply = conn.route_command(ask(sub), routing).await.expect("PUBSUB on every master");
                    let by_master: Vec<(String, Vec<String>)> =
                        redis::from_redis_value(reply).expect("address → channels");
                    for (master, channels) in by_master {
                        let index = match per_master.iter().position(|m| m.redis == master) {
                            Some(index) => index,
                            None => {
                                per_master.push(RedisChannels { redis: master, ..Default::default() });
                                per_master.len() - 1
                            }
                        };
                        let entry = &mut per_master[index];
                        if sharded {
                            entry.sharded = channels
                        } else {
                            entry.classic = channels
                        }
                    }
                }
                per_master
            }
            mut conn => {
                let classic: Vec<String> = ask("CHANNELS").query_async(&mut conn).await.unwrap();
                let sharded: Vec<String> = ask("SHARDCHANNELS").query_async(&mut conn).await.unwrap();
                vec![RedisChannels { redis: "the redis-server".into(), classic, sharded }]
            }
        }
    }

    /// The variable and value that point a process at this cluster's Redis.
    fn redis_env(&self) -> (&'static str, String) {
        match &self.target {
            RedisTarget::Single(url) => ("REDIS_URL", url.clone()),
            RedisTarget::Cluster(nodes) => ("REDIS_CLUSTER_NODES", nodes.join(",")),
        }
    }

    pub fn node_config(&self) -> GatewayConfig {
        GatewayConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            redis: Some(self.target.clone()),
            replica_acks: self.replica_acks,
            database_url: self.db.url(),
            jwt: JwtKey::Hs256(JWT_SECRET.into()),
            api_key: API_KEY.into(),
            anonymous_personal: false,
            limits: self.limits.clone(),
            redis_prefix: self.prefix.clone(),
            window: self.window,
            data_dir: None,
            generated: Vec::new(),
        }
    }

    pub async fn add_node(&mut self) -> &Node {
        let node = Node::start(self.node_config()).await;
        self.nodes.push(node);
        self.nodes.last().unwrap()
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// A worker running in this process (stopped when the cluster is dropped).
    pub async fn start_worker(&mut self) {
        let store = Store::connect(&self.db.url(), 4).await.expect("worker store");
        let broker = self.broker();
        let settings = worker::WorkerSettings {
            consumer: format!("in-process-{}", self.workers.len()),
            batch_size: 256,
            claim_idle: Duration::from_secs(15),
            block: Duration::from_millis(200),
            after_commit: None,
            after_award_publish: None,
        };
        let stop = CancellationToken::new();
        let worker = worker::Worker::new(Arc::new(broker), store, settings, worker::Rules::default_set());
        tokio::spawn(worker.run(stop.clone()));
        self.workers.push(stop);
    }

    /// A worker process (the real binary's code, `env!("CARGO_BIN_EXE_e2e-worker")` from a
    /// test), for crash tests. Pending jobs of dead consumers are claimed after `claim_idle_ms`.
    pub fn spawn_worker_process(&self, exe: &str, claim_idle_ms: u64) -> Process {
        self.spawn_worker_process_with(exe, claim_idle_ms, &[])
    }

    /// `spawn_worker_process` with extra environment; its standard output is kept for
    /// [`Process::wait_for_line`].
    pub fn spawn_worker_process_with(&self, exe: &str, claim_idle_ms: u64, env: &[(&str, &str)]) -> Process {
        let child = Command::new(exe)
            .env("WORKER_METRICS_BIND", "127.0.0.1:0")
            .env(self.redis_env().0, self.redis_env().1)
            .env("GATEWAY_REDIS_REPLICA_ACKS", self.replica_acks.to_string())
            .env("DATABASE_URL", self.db.url())
            .env("GATEWAY_REDIS_PREFIX", &self.prefix)
            .env("WORKER_CLAIM_IDLE_MS", claim_idle_ms.to_string())
            .env("WORKER_BATCH", "16")
            .env("RUST_LOG", "warn")
            // Last: a test may set any of the above (a port, the batch, the log level).
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawning the worker process");
        Process(child)
    }

    /// Runs a worker subcommand (e.g. `["dead-letters"]`) to its end: its standard output and
    /// whether it succeeded.
    pub async fn worker_command(&self, exe: &str, args: &[&str]) -> (String, bool) {
        let mut command = Command::new(exe);
        command
            .args(args)
            .env(self.redis_env().0, self.redis_env().1)
            .env("GATEWAY_REDIS_REPLICA_ACKS", self.replica_acks.to_string())
            .env("DATABASE_URL", self.db.url())
            .env("GATEWAY_REDIS_PREFIX", &self.prefix)
            .env("RUST_LOG", "warn");
        let out = tokio::time::timeout(HANG_GUARD, tokio::task::spawn_blocking(move || command.output()))
            .await
            .expect("the worker command did not end")
            .expect("join")
            .expect("running the worker command");
        (String::from_utf8_lossy(&out.stdout).into_owned(), out.status.success())
    }

    /// A gateway node as a process (the real binary's code, `env!("CARGO_BIN_EXE_e2e-gateway")`
    /// from a test), for killing it. Returns the process and its base address.
    pub async fn spawn_node_process(&self, exe: &str) -> (Process, SocketAddr) {
        self.spawn_node_process_with(Command::new(exe), &[]).await
    }

    /// `spawn_node_process` with at most `descriptors` open files (run under `prlimit`).
    pub async fn spawn_node_process_limited(
        &self,
        exe: &str,
        descriptors: u32,
        env: &[(&str, &str)],
    ) -> (Process, SocketAddr) {
        let mut command = Command::new("prlimit");
        command.arg(format!("--nofile={descriptors}:{descriptors}")).arg("--").arg(exe);
        self.spawn_node_process_with(command, env).await
    }

    /// `spawn_node_process` logging at debug level, everything it writes going to `log`.
    pub async fn spawn_node_process_logging(&self, exe: &str, log: &Path) -> (Process, SocketAddr) {
        self.spawn_node_process_logging_env(exe, log, &[("RUST_LOG", "debug")]).await
    }

    /// `spawn_node_process_logging` with its own environment (`RUST_LOG` included).
    pub async fn spawn_node_process_logging_env(
        &self,
        exe: &str,
        log: &Path,
        env: &[(&str, &str)],
    ) -> (Process, SocketAddr) {
        let file = std::fs::File::create(log).expect("the log file");
        let mut command = Command::new(exe);
        command.stderr(file.try_clone().unwrap());
        self.spawn_node_process_output(command, env, Stdio::from(file)).await
    }

    /// `spawn_node_process` with more environment (tracing settings, say).
    pub async fn spawn_node_process_env(&self, exe: &str, env: &[(&str, &str)]) -> (Process, SocketAddr) {
        self.spawn_node_process_with(Command::new(exe), env).await
    }

    async fn spawn_node_process_with(&self, command: Command, env: &[(&str, &str)]) -> (Process, SocketAddr) {
        self.spawn_node_process_output(command, env, Stdio::null()).await
    }

    async fn spawn_node_process_output(
        &self,
        mut command: Command,
        env: &[(&str, &str)],
        stdout: Stdio,
    ) -> (Process, SocketAddr) {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = command
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .env("GATEWAY_BIND", addr.to_string())
            .env(self.redis_env().0, self.redis_env().1)
            .env("GATEWAY_REDIS_REPLICA_ACKS", self.replica_acks.to_string())
            .env("DATABASE_URL", self.db.url())
            .env("GATEWAY_REDIS_PREFIX", &self.prefix)
            .env("JWT_SECRET", JWT_SECRET)
            .env("GATEWAY_API_KEY", API_KEY)
            .stdout(stdout)
            .spawn()
            .expect("spawning a gateway process");
        let process = Process(child);
        answers_200(addr, "/healthz").await;
        (process, addr)
    }

    /// `GET /api/v1/ws/status` on node `i`: the cluster-wide count of connected users.
    pub async fn connected_users(&self, i: usize) -> u64 {
        let (status, body) = http("GET", &self.node(i).http("/api/v1/ws/status"), None, None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "active");
        body["connected_users"].as_u64().expect("connected_users")
    }

    /// Upserts a user through the server API.
    pub async fn user(&self, id: &str, display_name: Option<&str>) {
        let body = json!({"username": id, "display_name": display_name});
        let (status, reply) =
            http("PUT", &self.node(0).http(&format!("/api/v1/users/{id}")), Some(API_KEY), Some(body)).await;
        assert_eq!(status, 200, "PUT user: {reply}");
    }

    /// Creates a Send Buddy session through the server API and returns its id.
    pub async fn session(&self, inviter: &str, invitee: &str) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        self.session_with_id(&id, inviter, invitee).await;
        id
    }

    /// Creates the session `id`, or replaces its participants, through the server API.
    pub async fn session_with_id(&self, id: &str, inviter: &str, invitee: &str) {
        let body = json!({"inviter_id": inviter, "invitee_id": invitee});
        let (status, reply) =
            http("PUT", &self.node(0).http(&format!("/api/v1/sessions/{id}")), Some(API_KEY), Some(body)).await;
        assert_eq!(status, 200, "PUT session: {reply}");
    }

    /// Creates a chat (or replaces its members) through the server API.
    pub async fn chat(&self, id: &str, members: &[&str]) {
        let body = json!({"member_ids": members});
        let (status, reply) =
            http("PUT", &self.node(0).http(&format!("/api/v1/chats/{id}")), Some(API_KEY), Some(body)).await;
        assert_eq!(status, 200, "PUT chat: {reply}");
    }

    /// Creates or updates a Pythia channel through the server API.
    pub async fn channel(&self, id: &str, name: &str, private: bool, members: &[&str]) {
        let body = json!({"name": name, "private": private, "member_ids": members});
        let (status, reply) =
            http("PUT", &self.node(0).http(&format!("/api/v1/channels/{id}")), Some(API_KEY), Some(body)).await;
        assert_eq!(status, 200, "PUT channel: {reply}");
    }

    /// A chat's history through the server API, newest first.
    pub async fn chat_history(&self, chat: &str) -> Vec<Value> {
        let url = self.node(0).http(&format!("/api/v1/chats/{chat}/messages?limit=200"));
        let (status, reply) = http("GET", &url, Some(API_KEY), None).await;
        assert_eq!(status, 200, "GET chat messages: {reply}");
        reply["messages"].as_array().cloned().unwrap_or_default()
    }

    pub async fn history(&self, session: &str) -> Vec<Value> {
        let url = self.node(0).http(&format!("/api/v1/sessions/{session}/messages?limit=200"));
        let (status, reply) = http("GET", &url, Some(API_KEY), None).await;
        assert_eq!(status, 200, "GET messages: {reply}");
        reply["messages"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for stop in &self.workers {
            stop.cancel();
        }
    }
}

/// A token signed with the test secret.
pub fn token(user: &str) -> String {
    shared::auth::issue_hs256(JWT_SECRET, user, 3600)
}

/// The session socket path of sendbuddy.md.
pub fn session_path(session: &str, token: &str) -> String {
    format!("/ws/sessions/{session}/?token={token}")
}
