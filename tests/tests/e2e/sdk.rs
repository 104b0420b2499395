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

/// The TypeScript SDK as a user installs it: `npm pack` in clients/ts (its `prepare` script builds
/// `dist/`), the tarball installed into a fresh folder, its suite run against that installed package
/// (resolved by name, through the package's `exports`) in Node and in Chromium.
#[tokio::test]
async fn the_typescript_sdk_passes_its_suite_in_node_and_chromium() {
    let dir = repo().join("clients/ts");
    assert!(
        dir.join("node_modules/ws").exists() && dir.join("node_modules/playwright-core").exists(),
        "clients/ts has no node_modules: run `npm ci` there (scripts/test does)"
    );
    let installed = e2e::TempDir::new("sdk-ts");
    let at = installed.path();
    let pack = ["pack", "--pack-destination", at.to_str().unwrap(), "--loglevel=error"];
    run("npm", &pack, &dir, &[], "install npm").await;
    let tarball = std::fs::read_dir(at)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "tgz"))
        .expect("npm pack made a tarball");
    let listing = std::process::Command::new("tar").arg("-tzf").arg(&tarball).output().expect("tar");
    let listing = String::from_utf8_lossy(&listing.stdout);
    for file in ["package/dist/index.js", "package/dist/index.d.ts", "package/package.json"] {
        assert!(listing.lines().any(|l| l == file), "the tarball lacks {file}:\n{listing}");
    }
    std::fs::write(at.join("package.json"), r#"{"private": true}"#).unwrap();
    let install = ["install", "--offline", "--no-audit", "--no-fund", "--loglevel=error", tarball.to_str().unwrap()];
    run("npm", &install, at, &[], "install npm").await;
    std::fs::write(at.join("entry.mjs"), "export * from \"@rtgate/client\";\n").unwrap();

    let (_cluster, _process, mut env) = cluster_for("sdk-ts").await;
    env.push(("SDK_ENTRY", format!("file://{}", at.join("entry.mjs").display())));
    env.push(("SDK_FILE", at.join("node_modules/@rtgate/client/dist/index.js").display().to_string()));
    run("node", &["--test", "--test-concurrency=1", "test/"], &dir, &env, "install Node.js 20 or later").await;
}

/// The Python SDK as a user installs it: `pip install clients/python` into a fresh virtualenv (with
/// the system's `websockets` and `pytest`), its suite run from its tests folder against the
/// installed package, not the source tree.
#[tokio::test]
async fn the_python_sdk_passes_its_suite() {
    let dir = repo().join("clients/python");
    let python = std::env::var("GATEWAY_TEST_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".to_owned());
    let missing = "install the Debian packages python3-venv, python3-websockets and python3-pytest (scripts/test does)";
    let venv = e2e::TempDir::new("sdk-py");
    let venv_dir = venv.path().to_str().unwrap();
    run(&python, &["-m", "venv", "--system-site-packages", venv_dir], &dir, &[], missing).await;
    let pip = venv.path().join("bin/pip");
    let install = ["install", "-q", "--disable-pip-version-check", dir.to_str().unwrap()];
    run(pip.to_str().unwrap(), &install, &dir, &[], missing).await;
    let venv_python = venv.path().join("bin/python");
    let venv_python = venv_python.to_str().unwrap();
    let mut at = tokio::process::Command::new(venv_python);
    at.args(["-c", "import rtgate_client; print(rtgate_client.__file__, rtgate_client.__version__)"]).current_dir("/");
    let where_from = run_driver(at, missing).await;
    assert!(where_from.contains(&format!("{venv_dir}/lib/")), "imported from {where_from}");

    let (_cluster, _process, mut env) = cluster_for("sdk-py").await;
    env.push(("PYTHONDONTWRITEBYTECODE", "1".to_owned()));
    // From the tests folder: the source tree's `rtgate_client` is not on the path.
    let tests = dir.join("tests");
    run(venv_python, &["-m", "pytest", "-q", "-p", "no:cacheprovider", "."], &tests, &env, missing).await;
}
