//! Redis for a test: a private `redis-server`, and a proxy in front of it that can freeze pub/sub connections.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{eventually, free_port, TempDir};

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
