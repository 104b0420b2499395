//! PostgreSQL for a test: an isolated database on the suite's server, or a private server the test can stop.

use std::path::PathBuf;
use std::process::Command;

use crate::{free_port, TempDir};

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

    /// Freezes the server (SIGSTOP to the postmaster and every backend): connections stay open
    /// and nothing answers, as when its host stalls. `thaw` ends it.
    pub fn freeze(&self) {
        self.signal_all("-STOP");
    }

    pub fn thaw(&self) {
        self.signal_all("-CONT");
    }

    fn signal_all(&self, signal: &str) {
        let pid_file = self.dir.path().join("data").join("postmaster.pid");
        let pids = std::fs::read_to_string(&pid_file).expect("the postmaster's pid file");
        let postmaster = pids.lines().next().unwrap_or_default().trim().to_owned();
        let children = Command::new("pgrep").args(["-P", &postmaster]).output().expect("pgrep (Debian package procps)");
        let mut all = vec![postmaster];
        all.extend(String::from_utf8_lossy(&children.stdout).split_whitespace().map(str::to_owned));
        let status = Command::new("kill").arg(signal).args(&all).status().expect("kill");
        assert!(status.success(), "kill {signal} PostgreSQL");
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
