//! This machine: temporary folders, free ports, the repository, and the tools other languages' drivers run with.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

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

pub(crate) fn free_port() -> u16 {
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
