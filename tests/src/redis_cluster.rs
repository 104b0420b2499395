//! A private Redis Cluster for a test that breaks one: six `redis-server --cluster-enabled yes`
//! (three masters with a replica each, `cluster-node-timeout` 2 s), joined with
//! `redis-cli --cluster create`, as `scripts/lib/redis-cluster.sh` does for the suite. A test can
//! SIGKILL the master of a key's slot or migrate a slot to another master under load.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use shared::connection::RedisTarget;

use crate::{eventually, TempDir, HANG_GUARD};

pub struct RedisCluster {
    dir: TempDir,
    servers: Vec<(u16, Option<Child>)>,
}

/// One line of `CLUSTER NODES`: id, port, whether it is a master, its slot ranges.
#[derive(Debug, Clone)]
pub struct ClusterNode {
    pub id: String,
    pub port: u16,
    pub master: bool,
    pub slots: Vec<(u16, u16)>,
}

impl RedisCluster {
    pub async fn start() -> Self {
        let dir = TempDir::new("redis-cluster");
        let mut cluster = Self { dir, servers: Vec::new() };
        while cluster.servers.len() < 6 {
            let port = cluster_port();
            let child = cluster.spawn(port).await;
            cluster.servers.push((port, Some(child)));
        }
        let addresses: Vec<String> = cluster.servers.iter().map(|(port, _)| format!("127.0.0.1:{port}")).collect();
        let created = tokio::task::spawn_blocking(move || {
            Command::new("redis-cli")
                .arg("--cluster")
                .arg("create")
                .args(&addresses)
                .args(["--cluster-replicas", "1", "--cluster-yes"])
                .output()
        });
        let out = tokio::time::timeout(HANG_GUARD, created).await.expect("cluster create hangs").unwrap().unwrap();
        assert!(out.status.success(), "redis-cli --cluster create: {}", String::from_utf8_lossy(&out.stdout));
        cluster.wait_until_healthy().await;
        cluster
    }

    /// Starts the node of `port` (its folder keeps `nodes.conf`: it rejoins as it left).
    async fn spawn(&self, port: u16) -> Child {
        let data = self.dir.path().join(port.to_string());
        std::fs::create_dir_all(&data).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
            .args(["--cluster-config-file", "nodes.conf"])
            .arg("--dir")
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server ({e}): install the Debian package redis-server"));
        eventually("a cluster node answers", || async move { ping(port).await }).await;
        child
    }

    /// Starts a killed node again, as a supervisor would: it rejoins the cluster, as a replica
    /// of whoever took over its slots.
    pub async fn restart(&mut self, port: u16) {
        let child = self.spawn(port).await;
        let (_, slot) = self.servers.iter_mut().find(|(p, _)| *p == port).expect("a node of this cluster");
        assert!(slot.is_none(), "the node on {port} is running");
        *slot = Some(child);
    }

    /// Every node says `cluster_state:ok` and every master has its replica.
    pub async fn wait_until_healthy(&self) {
        for (port, child) in &self.servers {
            if child.is_none() {
                continue;
            }
            let port = *port;
            eventually("the cluster is ok", || async move {
                let info: String = query(port, redis::cmd("CLUSTER").arg("INFO")).await.unwrap_or_default();
                info.contains("cluster_state:ok")
            })
            .await;
        }
        eventually("every master has a replica in sync", || async {
            let nodes = self.nodes().await;
            let masters = nodes.iter().filter(|n| n.master).count();
            let mut in_sync = 0;
            for replica in nodes.iter().filter(|n| !n.master) {
                let info: String = query(replica.port, redis::cmd("INFO").arg("replication")).await.unwrap_or_default();
                in_sync += usize::from(info.contains("master_link_status:up"));
            }
            in_sync >= masters
        })
        .await;
    }

    /// The seed nodes, as `REDIS_CLUSTER_NODES` names them.
    pub fn target(&self) -> RedisTarget {
        RedisTarget::Cluster(self.servers.iter().map(|(port, _)| format!("redis://127.0.0.1:{port}")).collect())
    }

    /// The cluster's nodes as a live member sees them.
    pub async fn nodes(&self) -> Vec<ClusterNode> {
        for (port, child) in &self.servers {
            if child.is_none() {
                continue;
            }
            if let Ok(text) = query::<String>(*port, redis::cmd("CLUSTER").arg("NODES")).await {
                return text.lines().filter_map(parse_node).collect();
            }
        }
        Vec::new()
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`).
    pub async fn slot_of(&self, key: &str) -> u16 {
        let port = self.servers.iter().find(|(_, c)| c.is_some()).expect("a live node").0;
        query(port, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key)).await.expect("CLUSTER KEYSLOT")
    }

    /// The master serving `slot`.
    pub async fn master_of(&self, slot: u16) -> ClusterNode {
        self.nodes()
            .await
            .into_iter()
            .find(|n| n.master && n.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
            .expect("a master serves every slot")
    }

    /// SIGKILL of the node on `port`: its replica takes over after `cluster-node-timeout`.
    pub fn kill(&mut self, port: u16) {
        let (_, child) = self.servers.iter_mut().find(|(p, _)| *p == port).expect("a node of this cluster");
        if let Some(mut child) = child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Moves `slot` and its keys to the master `to`, as `redis-cli --cluster reshard` does:
    /// `SETSLOT … IMPORTING` on the target, `MIGRATING` on the source, `MIGRATE` of the keys in
    /// batches, then `SETSLOT … NODE` everywhere. Clients meanwhile get `ASK` for keys already
    /// moved, and `MOVED` after.
    pub async fn migrate_slot(&self, slot: u16, to: &ClusterNode) {
        let from = self.master_of(slot).await;
        assert_ne!(from.id, to.id, "the slot is already there");
        let setslot = |state: &str, id: &str| {
            let mut cmd = redis::cmd("CLUSTER");
            cmd.arg("SETSLOT").arg(slot).arg(state).arg(id);
            cmd
        };
        let () = query(to.port, &setslot("IMPORTING", &from.id)).await.expect("SETSLOT IMPORTING");
        let () = query(from.port, &setslot("MIGRATING", &to.id)).await.expect("SETSLOT MIGRATING");
        loop {
            let keys: Vec<String> =
                query(from.port, redis::cmd("CLUSTER").arg("GETKEYSINSLOT").arg(slot).arg(10)).await.unwrap();
            if keys.is_empty() {
                break;
            }
            let mut migrate = redis::cmd("MIGRATE");
            migrate.arg("127.0.0.1").arg(to.port).arg("").arg(0).arg(5000).arg("KEYS").arg(&keys);
            let _: redis::Value = query(from.port, &migrate).await.expect("MIGRATE");
            // A little at a time, so that publications run in the middle of the move.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for node in self.nodes().await.iter().filter(|n| n.master) {
            let () = query(node.port, &setslot("NODE", &to.id)).await.expect("SETSLOT NODE");
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.servers {
            if let Some(mut child) = child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A free port whose cluster bus port (+10000) is free too.
fn cluster_port() -> u16 {
    loop {
        let port = crate::free_port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

async fn query<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> redis::RedisResult<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    cmd.query_async(&mut conn).await
}

async fn ping(port: u16) -> bool {
    query::<String>(port, &redis::cmd("PING")).await.is_ok()
}

/// `<id> <ip:port@bus> <flags> <master> … <slots…>` → a node (a failed one is left out).
fn parse_node(line: &str) -> Option<ClusterNode> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let flags = *fields.get(2)?;
    if flags.contains("fail") {
        return None;
    }
    let port = fields.get(1)?.split('@').next()?.rsplit(':').next()?.parse().ok()?;
    let slots = fields
        .iter()
        .skip(8)
        .filter(|s| !s.starts_with('['))
        .filter_map(|range| match range.split_once('-') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => range.parse().ok().map(|s| (s, s)),
        })
        .collect();
    Some(ClusterNode { id: fields[0].to_owned(), port, master: flags.contains("master"), slots })
}
