//! Several nodes starting at once against a fresh database: migrations run once, all serve.

use e2e::{session_path, token, Client, Cluster, Node};
use serde_json::json;

#[tokio::test]
async fn nodes_starting_together_share_one_migrated_database() {
    let mut cluster = Cluster::start(0).await;
    let (a, b, c) = tokio::join!(
        Node::start(cluster.node_config()),
        Node::start(cluster.node_config()),
        Node::start(cluster.node_config())
    );
    cluster.nodes.extend([a, b, c]);
    cluster.user("alice", None).await;
    cluster.user("bob", None).await;
    let session = cluster.session("alice", "bob").await;
    let mut alice = Client::connect(&cluster.node(2).ws(&session_path(&session, &token("alice")))).await;
    let mut bob = Client::connect(&cluster.node(1).ws(&session_path(&session, &token("bob")))).await;
    alice.send_json(json!({"type": "message", "content": "all up"})).await;
    assert_eq!(bob.recv().await["content"], "all up");
}

/// A draining node closes its sockets with 1012 so that clients reconnect elsewhere.
#[tokio::test]
async fn a_draining_node_closes_sockets_with_1012() {
    let mut cluster = Cluster::start(2).await;
    cluster.user("alice", None).await;
    cluster.user("bob", None).await;
    let session = cluster.session("alice", "bob").await;
    let mut alice = Client::connect(&cluster.node(1).ws(&session_path(&session, &token("alice")))).await;
    let draining = cluster.nodes.remove(1);
    let shutdown = tokio::spawn(draining.shutdown());
    assert_eq!(alice.closed().await, 1012);
    shutdown.await.unwrap();
    // The client reconnects to the other node and carries on.
    let mut alice = Client::connect(&cluster.node(0).ws(&session_path(&session, &token("alice")))).await;
    alice.send_json(json!({"type": "message", "content": "moved"})).await;
    assert_eq!(alice.recv().await["content"], "moved");
}

/// `LOG_FORMAT=json` makes every log line a JSON object (for log collectors); a value it does
/// not know stops the process at start, naming the setting.
#[tokio::test]
async fn logs_are_json_lines_with_log_format_json() {
    use tokio::io::AsyncBufReadExt;
    let dir = e2e::TempDir::new("json-logs");
    let exe = env!("CARGO_BIN_EXE_e2e-gateway");
    let mut process = tokio::process::Command::new(exe)
        .env("GATEWAY_DATA_DIR", dir.path())
        .env("GATEWAY_BIND", "127.0.0.1:0")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env_remove("REDIS_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(process.stderr.take().unwrap()).lines();
    let listening = tokio::time::timeout(e2e::HANG_GUARD, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let entry: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
            if entry["fields"]["message"] == "gateway listening" {
                return entry;
            }
        }
        panic!("the gateway exited without saying it listens");
    })
    .await
    .expect("no 'gateway listening' line");
    assert_eq!(listening["level"], "INFO");
    assert_eq!(listening["fields"]["mode"], "embedded");
    process.kill().await.unwrap();

    let refused = std::process::Command::new(exe)
        .env("GATEWAY_DATA_DIR", dir.path())
        .env("LOG_FORMAT", "xml")
        .env_remove("REDIS_URL")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("LOG_FORMAT"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

/// `check-config` names a Redis Cluster's seed nodes (passwords masked) and refuses a
/// configuration that sets both `REDIS_URL` and `REDIS_CLUSTER_NODES`, naming both; the worker
/// refuses it the same way.
#[test]
fn check_config_knows_a_redis_cluster_and_refuses_two_redis_settings() {
    let run = |exe: &str, redis_url: Option<&str>| {
        let mut command = std::process::Command::new(exe);
        command
            .arg("check-config")
            .env("REDIS_CLUSTER_NODES", "10.0.0.1:7000,redis://:hunter2@10.0.0.2:7001")
            .env("DATABASE_URL", "postgres://app@db/app")
            .env("JWT_SECRET", "s3cret")
            .env("GATEWAY_API_KEY", "k");
        match redis_url {
            Some(url) => command.env("REDIS_URL", url),
            None => command.env_remove("REDIS_URL"),
        };
        let out = command.output().unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let gateway = env!("CARGO_BIN_EXE_e2e-gateway");
    let (ok, said) = run(gateway, None);
    assert!(ok, "{said}");
    assert!(said.contains("Redis Cluster") && said.contains("10.0.0.1:7000"), "{said}");
    assert!(!said.contains("hunter2"), "{said}");
    for exe in [gateway, env!("CARGO_BIN_EXE_e2e-worker")] {
        let (ok, said) = run(exe, Some("redis://10.0.0.9:6379"));
        assert!(!ok, "{said}");
        assert!(said.contains("REDIS_URL") && said.contains("REDIS_CLUSTER_NODES"), "{said}");
    }
}

/// A Redis that would lose the jobs not yet stored in a crash (no append-only file, no replica)
/// is said loudly: the gateway's gauge, the console's nodes report, the worker's gauge, and
/// `check-config` of both binaries; with the append-only file on again, the next start says
/// all is well.
#[tokio::test]
async fn redis_that_would_lose_jobs_in_a_crash_is_said_loudly() {
    let server = e2e::RedisServer::start().await;
    let url = server.url();
    let mut conn = redis::Client::open(url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CONFIG").arg("SET").arg("appendonly").arg("no").query_async(&mut conn).await.unwrap();
    let redis = e2e::TestRedis { server: Some(server), target: shared::connection::RedisTarget::Single(url.clone()) };
    let cluster = Cluster::start_on_redis(1, Default::default(), e2e::TestDb::create().await, redis, 0).await;
    let node = cluster.node(0);
    e2e::eventually("the gateway's gauge says it", || async {
        node.metric("gateway_redis_persistence_at_risk").await == 1
    })
    .await;
    e2e::eventually("the console says it", || async {
        let (_, nodes) = e2e::http("GET", &node.http("/api/v1/console/nodes"), Some(e2e::API_KEY), None).await;
        nodes["nodes"][0]["warnings"][0].as_str().is_some_and(|w| w.contains("append-only file"))
    })
    .await;
    let exe = env!("CARGO_BIN_EXE_e2e-worker");
    let (said, ok) = cluster.worker_command(exe, &["check-config"]).await;
    assert!(ok && said.contains("warning: Redis") && said.contains("append-only"), "{said}");
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_e2e-gateway"))
        .arg("check-config")
        .env("REDIS_URL", &url)
        .env("DATABASE_URL", cluster.db.url())
        .env("JWT_SECRET", "s3cret")
        .env("GATEWAY_API_KEY", "k")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success() && said.contains("warning: Redis"), "{said}");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let bind = format!("127.0.0.1:{port}");
    let _worker = cluster.spawn_worker_process_with(exe, 15_000, &[("WORKER_METRICS_BIND", &bind)]);
    e2e::eventually("the worker's gauge says it", || async {
        if tokio::net::TcpStream::connect(&bind).await.is_err() {
            return false; // not serving yet
        }
        let (_, text) = e2e::http("GET", &format!("http://{bind}/metrics"), None, None).await;
        text.as_str().is_some_and(|t| t.contains("worker_redis_persistence_at_risk 1"))
    })
    .await;

    let _: () = redis::cmd("CONFIG").arg("SET").arg("appendonly").arg("yes").query_async(&mut conn).await.unwrap();
    let (said, ok) = cluster.worker_command(exe, &["check-config"]).await;
    assert!(ok && said.contains("every master writes an append-only file"), "{said}");
}
