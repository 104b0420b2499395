//! The load balancer of `deploy/nginx` (the file docker-compose.yml mounts) run by Debian's
//! nginx in front of two real nodes: sockets and API calls go through it to both nodes; a node
//! drained with its clients on it closes them with 1012, they reconnect through the balancer to
//! the other node, and nothing accepted is lost.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use e2e::{eventually, session_path, token, Client, Cluster, TempDir};
use serde_json::json;
use shared::ids::UserId;

/// Debian's nginx with `deploy/nginx/gateway.conf`, listening on a free port, in front of `nodes`.
struct Nginx {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Nginx {
    async fn start(nodes: &[SocketAddr]) -> Self {
        let binary = ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or_else(|| panic!("nginx is missing: install the Debian package nginx, or run scripts/test"));
        let dir = TempDir::new("nginx");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let shipped = include_str!("../../../deploy/nginx/gateway.conf");
        let config = shipped.replace("listen 8000;", &format!("listen 127.0.0.1:{port};"));
        assert_ne!(config, shipped, "deploy/nginx/gateway.conf listens on 8000");
        let servers: String = nodes.iter().map(|n| format!("    server {n} max_fails=1 fail_timeout=2s;\n")).collect();
        let d = dir.path().display();
        let files = [
            ("gateway.conf", config),
            ("gateway-upstream.conf", format!("upstream gateway_nodes {{\n{servers}    keepalive 8;\n}}\n")),
            (
                "nginx.conf",
                format!(
                    "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
                     events {{ worker_connections 1024; }}\n\
                     http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
                     fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
                     include gateway.conf;\n}}\n"
                ),
            ),
        ];
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let child = Command::new(binary)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start nginx ({e}): install the Debian package nginx"));
        let url = format!("http://127.0.0.1:{port}/healthz");
        eventually("nginx answers through to a node", || {
            let url = url.clone();
            async move {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                    && e2e::http("GET", &url, None, None).await.0 == 200
            }
        })
        .await;
        Self { child, port, _dir: dir }
    }

    fn ws(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    fn http(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn clients_behind_the_balancer_move_to_the_other_node_when_one_drains() {
    let mut cluster = Cluster::start(2).await;
    cluster.start_worker().await;
    cluster.user("alice", None).await;
    cluster.user("bob", None).await;
    let session = cluster.session("alice", "bob").await;
    let nginx = Nginx::start(&[cluster.node(0).addr, cluster.node(1).addr]).await;
    let path = |user: &str| session_path(&session, &token(user));

    // Round robin: alice's socket on one node, bob's on the other.
    let mut alice = Client::connect(&nginx.ws(&path("alice"))).await;
    let mut bob = Client::connect(&nginx.ws(&path("bob"))).await;
    let on = |i: usize, user: &str| cluster.node(i).sockets.of(&UserId::parse(user).unwrap());
    assert_eq!((on(0, "alice") + on(1, "alice"), on(0, "bob") + on(1, "bob")), (1, 1));
    assert_ne!(on(0, "alice"), on(0, "bob"), "the balancer put both sockets on one node");
    alice.send_json(json!({"type": "message", "content": "before"})).await;
    assert_eq!(alice.recv().await["content"], "before");
    assert_eq!(bob.recv().await["content"], "before");

    // Drain the node that holds bob: his socket is closed 1012 and reconnects through nginx.
    let bobs_node = if on(0, "bob") == 1 { 0 } else { 1 };
    let draining = cluster.nodes.remove(bobs_node);
    let drained = tokio::spawn(draining.shutdown());
    assert_eq!(bob.closed().await, 1012);
    drained.await.unwrap();
    let mut bob = Client::connect(&nginx.ws(&path("bob"))).await;
    assert_eq!(cluster.node(0).sockets.of(&UserId::parse("bob").unwrap()), 1, "bob is on the node left");
    for n in 0..5 {
        alice.send_json(json!({"type": "message", "content": format!("after {n}")})).await;
        assert_eq!(alice.recv().await["content"], format!("after {n}"));
        assert_eq!(bob.recv().await["content"], format!("after {n}"));
    }

    // Nothing accepted is lost: the history, read through the balancer, has all six.
    let history = nginx.http(&format!("/api/v1/sessions/{session}/messages"));
    eventually("all six messages are stored", || {
        let history = history.clone();
        async move {
            let (status, body) = e2e::http("GET", &history, Some(e2e::API_KEY), None).await;
            status == 200 && body["messages"].as_array().is_some_and(|m| m.len() == 6)
        }
    })
    .await;
}
