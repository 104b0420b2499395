//! The real binaries as child processes, SIGKILLed when dropped.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::{eventually, free_port, http, API_KEY, HANG_GUARD, JWT_SECRET};

/// A child process that is SIGKILLed when dropped, so that a failing test leaves none behind.
pub struct Process(pub(crate) Child);

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
pub(crate) async fn answers_200(addr: SocketAddr, path: &str) {
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

    /// SIGSTOP: the process holds its connections and does nothing, as a hung one would.
    pub fn freeze(&self) {
        let status = Command::new("kill").args(["-STOP", &self.0.id().to_string()]).status().expect("kill");
        assert!(status.success(), "kill -STOP");
    }

    /// SIGTERM: asks the process to stop cleanly.
    pub fn terminate(&self) {
        let status = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status().expect("kill");
        assert!(status.success(), "kill -TERM");
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
