//! The client SDKs (clients/ts, clients/python) against real nodes: one node in this process and
//! one gateway process that the SDK tests SIGKILL mid-stream, a worker persisting, a chat and two
//! Pythia channels. The TypeScript
//! suite runs in Node (`node --test`, with the `ws` package) and in headless Chromium; the Python
//! suite with pytest. Each must end with every message exactly once and in order.

use std::path::Path;

use e2e::{repo, run_driver, Cluster, API_KEY, JWT_SECRET};

/// A cluster for one SDK suite: the in-process node, a gateway process to kill, a worker, a chat.
async fn cluster_for(user: &str) -> (Cluster, e2e::Process, Vec<(&'static str, String)>) {
    let mut cluster = Cluster::start(1).await;
    cluster.start_worker().await;
    cluster.user(user, None).await;
    let chat = format!("{user}-chat");
    cluster.chat(&chat, &[user]).await;
    // Two Pythia channels: its `/ws` resumes from a token over several groups.
    let channels = [format!("{user}-one"), format!("{user}-two")];
    for channel in &channels {
        cluster.channel(channel, channel, false, &[user]).await;
    }
    let (process, addr) = cluster.spawn_node_process(env!("CARGO_BIN_EXE_e2e-gateway")).await;
    let env = vec![
        ("SOCKET_URLS", format!("ws://{addr} ws://{}", cluster.node(0).addr)),
        ("API_URL", format!("http://{}", cluster.node(0).addr)),
        ("API_KEY", API_KEY.to_owned()),
        ("JWT_SECRET", JWT_SECRET.to_owned()),
        ("CHAT_ID", chat),
        ("CHANNEL_IDS", channels.join(" ")),
        ("USER_ID", user.to_owned()),
        ("KILL_PID", process.id().to_string()),
    ];
    (cluster, process, env)
}

async fn run(program: &str, args: &[&str], dir: &Path, env: &[(&'static str, String)], missing: &str) {
    let mut command = tokio::process::Command::new(program);
    command.args(args).current_dir(dir).envs(env.iter().map(|(name, value)| (name, value)));
    println!("{}", run_driver(command, missing).await);
}

#[tokio::test]
async fn the_typescript_sdk_passes_its_suite_in_node_and_chromium() {
    let dir = repo().join("clients/ts");
    assert!(
        dir.join("node_modules/ws").exists() && dir.join("node_modules/playwright-core").exists(),
        "clients/ts has no node_modules: run `npm ci` there (scripts/test does)"
    );
    let (_cluster, _process, env) = cluster_for("sdk-ts").await;
    let tsc = dir.join("node_modules/.bin/tsc");
    run(tsc.to_str().unwrap(), &["-p", "."], &dir, &env, "run `npm ci` in clients/ts").await;
    run("node", &["--test", "--test-concurrency=1", "test/"], &dir, &env, "install Node.js 20 or later").await;
}

#[tokio::test]
async fn the_python_sdk_passes_its_suite() {
    let dir = repo().join("clients/python");
    let python = std::env::var("GATEWAY_TEST_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".to_owned());
    let (_cluster, _process, mut env) = cluster_for("sdk-py").await;
    env.push(("PYTHONPATH", dir.display().to_string()));
    env.push(("PYTHONDONTWRITEBYTECODE", "1".to_owned()));
    let missing = "install the Debian packages python3-websockets and python3-pytest (scripts/test does)";
    run(&python, &["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], &dir, &env, missing).await;
}
