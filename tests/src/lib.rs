//! The end-to-end harness: real servers, real binaries' code paths.
//!
//! * [`RedisServer`] starts a private `redis-server` (AOF on, so a restart keeps the jobs stream).
//! * [`TestDb`] creates an isolated PostgreSQL database on the server named by
//!   `GATEWAY_TEST_DATABASE_URL` (`scripts/test` starts a private one) and drops it afterwards.
//! * [`Cluster`] runs gateway nodes in-process through the same `Gateway::build` as the binary, on
//!   port 0 with a random key prefix, plus workers in-process or as processes (to SIGKILL them).
//! * [`Client`] is a WebSocket client; [`http`] a minimal HTTP client; [`eventually`] waits for a
//!   condition with a deadline instead of sleeping.
//!
//! A missing server fails the test with what to install; nothing here skips.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gateway::{Gateway, LocalSockets};
use serde_json::{json, Value};
use shared::auth::JwtKey;
use shared::broker::RedisBroker;
use shared::config::{GatewayConfig, GroupWindow, Limits};
use shared::store::Store;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

/// Guards against hangs, never asserts speed: anything that takes this long has failed.
pub const HANG_GUARD: Duration = Duration::from_secs(30);

/// Polls `check` until it is true; panics with `what` after [`HANG_GUARD`].
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    within(HANG_GUARD, what, check).await
}

/// Polls `check` until it is true; panics with `what` after `deadline` (for waits whose bound is
/// the behaviour under test, e.g. "persisted within a few seconds, not after a 15 s reclaim").
pub async fn within<F, Fut>(deadline: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = tokio::time::Instant::now() + deadline;
    while !check().await {
        assert!(tokio::time::Instant::now() < until, "gave up waiting {deadline:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A folder removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("rtgate-{tag}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("creating a temp dir");
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The repository's root folder (files the tests read or drive: deploy/, clients/, tests/console/).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the repository root").to_owned()
}

/// A tool of the PyPI virtualenv `scripts/test` makes (`GATEWAY_TEST_PYTOOLS`), else from PATH;
/// a missing one fails the test, naming what to install.
pub fn pytool(name: &str) -> PathBuf {
    let from_env = std::env::var_os("GATEWAY_TEST_PYTOOLS").map(|dir| PathBuf::from(dir).join(name));
    let candidate = from_env.unwrap_or_else(|| PathBuf::from(name));
    match Command::new(&candidate).arg("--version").output() {
        Ok(out) if out.status.success() => candidate,
        _ => panic!("{name} is missing: `pip install {name}` (scripts/test installs it into target/pytools)"),
    }
}

/// Runs a test driver written in another language (Node, Python) to its end, within 5 minutes,
/// and returns what it printed; a driver that fails, or cannot start (`missing` says what to
/// install), fails the test with its output.
pub async fn run_driver(mut command: tokio::process::Command, missing: &str) -> String {
    command.kill_on_drop(true).stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = tokio::time::timeout(Duration::from_secs(300), command.output())
        .await
        .expect("the driver ended within 5 minutes")
        .unwrap_or_else(|e| panic!("the driver does not start ({e}): {missing}"));
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the driver failed:\n{said}");
    said
}

/// A private redis-server on its own port and folder.
pub struct RedisServer {
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl RedisServer {
    pub async fn start() -> Self {
        let mut server = Self { port: free_port(), dir: TempDir::new("redis"), child: None };
        // A port found free can be taken before redis-server binds it; then try another.
        for _ in 0..5 {
            if server.spawn().await {
                return server;
            }
            server.port = free_port();
        }
        panic!("redis-server did not start on any of five ports");
    }

    /// Starts redis-server and waits until it answers; false if it exited (port taken).
    async fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): install the Debian package redis-server, or run scripts/test")
            });
        self.child = Some(child);
        let url = self.url();
        let mut exited = false;
        eventually("redis-server accepts connections", || {
            let url = url.clone();
            exited = self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            let exited = exited;
            async move {
                if exited {
                    return true;
                }
                let Ok(client) = redis::Client::open(url) else { return false };
                match client.get_multiplexed_async_connection().await {
                    Ok(mut conn) => redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok(),
                    Err(_) => false,
                }
            }
        })
        .await;
        if exited {
            self.child = None;
        }
        !exited
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// SIGKILL: no goodbye to anyone connected.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Deletes what the server keeps on disk (its AOF), so that it starts again empty, as a server
    /// run without persistence does after a crash.
    pub fn forget_data(&self) {
        assert!(self.child.is_none(), "redis-server is still running");
        for entry in std::fs::read_dir(self.dir.path()).expect("the redis folder") {
            let path = entry.expect("a redis file").path();
            let _ = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        }
    }

    /// Stops the server (SIGSTOP) for `pause`, then lets it go on (SIGCONT): connections stay
    /// open and nothing answers, as with a stalled host.
    pub async fn freeze_for(&self, pause: Duration) {
        let pid = self.child.as_ref().expect("redis-server is running").id().to_string();
        let signal = |sig: &str| {
            let status = Command::new("kill").args([sig, pid.as_str()]).status().expect("running kill");
            assert!(status.success(), "kill {sig} {pid}");
        };
        signal("-STOP");
        tokio::time::sleep(pause).await;
        signal("-CONT");
    }

    /// Starts again on the same port and data folder.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "redis-server is still running");
        assert!(self.spawn().await, "redis-server did not start again on port {}", self.port);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A PostgreSQL server of the test's own (initdb in a temporary folder, a free port), so that
/// the test can stop it and start it again. Durability off, as in `scripts/test`.
pub struct PrivatePostgres {
    bindir: PathBuf,
    dir: TempDir,
    port: u16,
    as_postgres: bool,
}

impl PrivatePostgres {
    pub async fn start() -> Self {
        let bindir = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|dirs| {
                dirs.filter_map(Result::ok).map(|d| d.path().join("bin")).filter(|b| b.join("initdb").exists()).max()
            })
            .unwrap_or_else(|| {
                panic!("PostgreSQL's server programs are missing: install the Debian package postgresql")
            });
        let dir = TempDir::new("pg");
        // PostgreSQL refuses to run as root: as root, run it as the postgres user.
        let as_postgres = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0"));
        if as_postgres {
            let status = Command::new("chown").arg("postgres:").arg(dir.path()).status().expect("chown");
            assert!(status.success(), "chown of the PostgreSQL folder");
        }
        let server = Self { bindir, dir, port: free_port(), as_postgres };
        let data = server.dir.path().join("data");
        server.run("initdb", &["-D", data.to_str().unwrap(), "-U", "postgres", "-A", "trust", "--no-sync"]);
        server.start_again().await;
        server
    }

    fn run(&self, program: &str, args: &[&str]) {
        let path = self.bindir.join(program);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let out = command.args(args).output().unwrap_or_else(|e| panic!("running {program}: {e}"));
        assert!(out.status.success(), "{program} failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Starts (again) on the same port and data.
    pub async fn start_again(&self) {
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("server.log");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        self.run("pg_ctl", &["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap(), "-w", "-o", &options, "start"]);
    }

    /// Stops the server (fast: open connections are cut).
    pub fn stop(&self) {
        let data = self.dir.path().join("data");
        self.run("pg_ctl", &["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"]);
    }

    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let path = self.bindir.join("pg_ctl");
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let _ = command.args(["-D", data.to_str().unwrap(), "-m", "immediate", "stop"]).output();
    }
}

/// A TCP proxy in front of Redis that can freeze the pub/sub connections it carries: stop
/// forwarding in both directions without closing them, as a stalled middlebox would. Only the
/// connections that have sent a SUBSCRIBE by the time of `freeze_subscribers` freeze; later
/// ones pass.
pub struct RedisProxy {
    addr: SocketAddr,
    state: Arc<std::sync::Mutex<ProxyState>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct ProxyState {
    next: u64,
    subscribers: std::collections::HashSet<u64>,
    frozen: std::collections::HashSet<u64>,
}

impl RedisProxy {
    pub async fn start(target: &str) -> Self {
        let target: SocketAddr =
            target.trim_start_matches("redis://").trim_end_matches('/').parse().expect("a redis://host:port/ url");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state: Arc<std::sync::Mutex<ProxyState>> = Arc::default();
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(target).await else { continue };
                let id = {
                    let mut s = shared.lock().unwrap();
                    s.next += 1;
                    s.next
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(Self::pipe(id, client_read, server_write, shared.clone(), true));
                tokio::spawn(Self::pipe(id, server_read, client_write, shared.clone(), false));
            }
        });
        Self { addr, state, task }
    }

    /// Copies `from` to `to` until either closes; holds everything once connection `id` froze.
    async fn pipe(
        id: u64,
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        state: Arc<std::sync::Mutex<ProxyState>>,
        from_client: bool,
    ) {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let frozen = {
                let mut s = state.lock().unwrap();
                if from_client && buf[..n].windows(9).any(|w| w.eq_ignore_ascii_case(b"SUBSCRIBE")) {
                    s.subscribers.insert(id);
                }
                s.frozen.contains(&id)
            };
            if frozen {
                // Stalled: hold the connection open, forward nothing, ever.
                std::future::pending::<()>().await;
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }

    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// Freezes every pub/sub connection open now.
    pub fn freeze_subscribers(&self) -> usize {
        let mut s = self.state.lock().unwrap();
        s.frozen = s.subscribers.clone();
        s.frozen.len()
    }
}

impl Drop for RedisProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An isolated database on the test PostgreSQL server, dropped afterwards.
pub struct TestDb {
    admin_url: String,
    name: String,
}

fn admin_url() -> String {
    std::env::var("GATEWAY_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

impl TestDb {
    pub async fn create() -> Self {
        Self::create_at(admin_url()).await
    }

    /// A database on the server of `admin_url` (a `PrivatePostgres`, for tests that stop it).
    pub async fn create_at(admin_url: String) -> Self {
        let name = format!("rtgate_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = connect_admin(&admin_url).await;
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("CREATE DATABASE");
        Self { admin_url, name }
    }

    pub fn url(&self) -> String {
        let base = self.admin_url.rsplit_once('/').map(|(base, _)| base).unwrap_or(&self.admin_url);
        format!("{base}/{}", self.name)
    }

    /// The database goes away for its clients: new connections are refused and open ones are
    /// ended, as when its server is down (the other databases of the server are untouched).
    pub async fn refuse_connections(&self) {
        let mut conn = connect_admin(&self.admin_url).await;
        let name = &self.name;
        sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
            .execute(&mut conn)
            .await
            .expect("ALTER DATABASE");
        sqlx::query(&format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
            .execute(&mut conn)
            .await
            .expect("ending the database's connections");
    }
}

async fn connect_admin(url: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(url).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is not reachable at {url} ({e}): install the Debian package postgresql and run \
             scripts/test (it starts a private server), or set GATEWAY_TEST_DATABASE_URL"
        )
    })
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs outside async; a short-lived runtime on its own thread does the cleanup.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let mut conn = connect_admin(&url).await;
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await;
            });
        })
        .join();
    }
}

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

/// Redis, a database, gateway nodes and workers sharing them.
pub struct Cluster {
    pub redis: RedisServer,
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
        let redis = RedisServer::start().await;
        let prefix = format!("t{}:", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let mut cluster =
            Self { redis, db, prefix, limits, window: GroupWindow::default(), nodes: Vec::new(), workers: Vec::new() };
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

    pub fn node_config(&self) -> GatewayConfig {
        GatewayConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            redis_url: Some(self.redis.url()),
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
        let broker = RedisBroker::new(&self.redis.url(), &self.prefix).expect("worker broker");
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
            .env("WORKER_METRICS_BIND", "127.0.0.1:0") // a test may name a port in `env`
            .envs(env.iter().copied())
            .env("REDIS_URL", self.redis.url())
            .env("DATABASE_URL", self.db.url())
            .env("GATEWAY_REDIS_PREFIX", &self.prefix)
            .env("WORKER_CLAIM_IDLE_MS", claim_idle_ms.to_string())
            .env("WORKER_BATCH", "16")
            .env("RUST_LOG", "warn")
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
            .env("REDIS_URL", self.redis.url())
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
        let file = std::fs::File::create(log).expect("the log file");
        let mut command = Command::new(exe);
        command.stderr(file.try_clone().unwrap());
        self.spawn_node_process_output(command, &[("RUST_LOG", "debug")], Stdio::from(file)).await
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
            .env("REDIS_URL", self.redis.url())
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

/// A child process that is SIGKILLed when dropped, so that a failing test leaves none behind.
pub struct Process(Child);

impl Process {
    /// The process id (for a test driver in another language that kills it).
    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

/// A gateway process in embedded mode (the real binary's code, `env!("CARGO_BIN_EXE_e2e-gateway")`)
/// on the SQLite file and folder of `dir`, with the test secrets; waits until it serves. Started
/// again on the same `dir`, it finds what the previous one left.
pub async fn spawn_embedded_process(exe: &str, dir: &Path, env: &[(&str, &str)]) -> (Process, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = Command::new(exe)
        .envs(env.iter().copied())
        .env("GATEWAY_BIND", addr.to_string())
        .env("GATEWAY_DATA_DIR", dir)
        .env("DATABASE_URL", format!("sqlite://{}", dir.join("gateway.db").display()))
        .env("JWT_SECRET", JWT_SECRET)
        .env("GATEWAY_API_KEY", API_KEY)
        .env_remove("REDIS_URL")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawning an embedded gateway process");
    let process = Process(child);
    answers_200(addr, "/readyz").await;
    (process, addr)
}

/// Waits until a process started at `addr` answers `path` with 200.
async fn answers_200(addr: SocketAddr, path: &str) {
    let url = format!("http://{addr}{path}");
    eventually(&format!("the gateway process answers {path}"), || {
        let url = url.clone();
        async move {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(_) => http("GET", &url, None, None).await.0 == 200,
                Err(_) => false,
            }
        }
    })
    .await;
}

impl Process {
    /// Blocks until the process prints `line` on its standard output.
    pub async fn wait_for_line(&mut self, line: &str) {
        use std::io::BufRead;
        let stdout = self.0.stdout.take().expect("stdout is piped");
        let wanted = line.to_owned();
        let found = tokio::time::timeout(
            HANG_GUARD,
            tokio::task::spawn_blocking(move || {
                std::io::BufReader::new(stdout).lines().any(|l| l.is_ok_and(|l| l == wanted))
            }),
        )
        .await;
        assert!(matches!(found, Ok(Ok(true))), "the process never printed {line:?}");
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
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

/// A WebSocket client, as a browser would be. Every frame rendered from a publication carries
/// its group's `seq` (an added field, for resuming); this client sets it aside, so that tests
/// compare the guides' shapes as they are, unless made `numbered` (the resume tests).
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    numbered: bool,
}

/// What the server did with a socket.
#[derive(Debug, PartialEq)]
pub enum Next {
    Frame(Value),
    Closed(u16),
}

impl Client {
    pub async fn connect(url: &str) -> Self {
        let (ws, _) = tokio::time::timeout(HANG_GUARD, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect hung")
            .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
        Self { ws, numbered: false }
    }

    /// Connects with a tiny TCP receive buffer, for a client that is going to stop reading: the
    /// kernel then holds little on its behalf and the server's outbox fills sooner.
    pub async fn connect_small_window(url: &str) -> Self {
        let addr = url.strip_prefix("ws://").and_then(|r| r.split('/').next()).expect("ws:// url");
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(addr.parse().unwrap()).await.expect("tcp connect");
        let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream)).await.expect("handshake");
        Self { ws, numbered: false }
    }

    /// This client keeps each frame's `seq`.
    pub fn numbered(mut self) -> Self {
        self.numbered = true;
        self
    }

    /// A frame as the test sees it: JSON, without `seq` unless the client is `numbered`.
    fn frame(&self, text: &str) -> Option<Value> {
        let mut value: Value = serde_json::from_str(text).ok()?;
        if let (false, Some(object)) = (self.numbered, value.as_object_mut()) {
            object.remove("seq");
        }
        Some(value)
    }

    pub async fn send_json(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    /// Sends, reporting a connection that is gone instead of panicking.
    pub async fn try_send_json(&mut self, value: Value) -> bool {
        self.ws.send(Message::text(value.to_string())).await.is_ok()
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.ws.send(Message::binary(bytes)).await.expect("send");
    }

    /// The next text frame or the close code (pings and pongs pass by).
    pub async fn next(&mut self) -> Next {
        // One deadline for the whole wait: the server's pings must not keep extending it.
        let deadline = tokio::time::Instant::now() + HANG_GUARD;
        loop {
            let message = tokio::time::timeout_at(deadline, self.ws.next()).await.expect("nothing arrived");
            match message {
                Some(Ok(Message::Text(text))) => {
                    return Next::Frame(self.frame(text.as_str()).expect("frames are JSON"))
                }
                Some(Ok(Message::Close(frame))) => {
                    return Next::Closed(frame.map(|f| u16::from(f.code)).unwrap_or(u16::from(CloseCode::Status)))
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("socket error: {e}"),
                None => panic!("socket ended without a close frame"),
            }
        }
    }

    /// The next JSON frame, or `None` once the connection has ended in any way (closed, reset,
    /// broken): for a server killed under its client.
    pub async fn try_next(&mut self) -> Option<Value> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(text))) => return self.frame(text.as_str()),
                Some(Ok(Message::Close(_)) | Err(_)) | None => return None,
                Some(Ok(_)) => continue,
            }
        }
    }

    /// The next JSON frame; panics if the socket closed instead.
    pub async fn recv(&mut self) -> Value {
        match self.next().await {
            Next::Frame(v) => v,
            Next::Closed(code) => panic!("socket closed with {code} while a frame was expected"),
        }
    }

    /// The next frame whose `type` is `kind`, passing over others (for broadcasts whose interleaving
    /// with unrelated frames is not the point of a test).
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            let frame = self.recv().await;
            if frame["type"] == kind {
                return frame;
            }
        }
    }

    /// Reads until the server's close frame; returns its code and reason.
    pub async fn close_frame(&mut self) -> (u16, String) {
        let deadline = tokio::time::Instant::now() + HANG_GUARD;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await.expect("no close frame arrived") {
                Some(Ok(Message::Close(Some(frame)))) => return (u16::from(frame.code), frame.reason.to_string()),
                Some(Ok(Message::Close(None))) => return (u16::from(CloseCode::Status), String::new()),
                Some(Ok(_)) => continue,
                other => panic!("the socket ended without a close frame: {other:?}"),
            }
        }
    }

    /// Reads until the server's close frame; returns its code.
    pub async fn closed(&mut self) -> u16 {
        loop {
            if let Next::Closed(code) = self.next().await {
                return code;
            }
        }
    }

    /// Stops reading; the socket stays open (a slow or stuck reader).
    pub fn into_inner(self) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
        self.ws
    }

    pub fn from_inner(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Self {
        Self { ws, numbered: false }
    }
}

/// Connects and returns the close code the server answers with (for refused upgrades).
pub async fn close_code_of(url: &str) -> u16 {
    Client::connect(url).await.closed().await
}

/// A minimal HTTP/1.1 request: `(status, JSON body or the text as a JSON string)`.
pub async fn http(method: &str, url: &str, bearer: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let (status, _, body) = http_with(method, url, bearer, &[], body).await;
    (status, body)
}

/// `http` with extra request headers; also returns the response's head (status line and
/// headers, as text).
pub async fn http_with(
    method: &str,
    url: &str,
    bearer: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, String, Value) {
    let rest = url.strip_prefix("http://").expect("http:// url");
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if let Some(token) = bearer {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    let exchange = async {
        let mut stream = TcpStream::connect(host).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(HANG_GUARD, exchange).await.expect("http hung").expect("http request");
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("HTTP status line");
    let value = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned()));
    (status, head.to_owned(), value)
}
