//! The fault suite's Redis Cluster faults, on a private six-node cluster under the same counting
//! chat load (`faults::Load`): the master of the chat's slot SIGKILLed (its replica takes over),
//! and the chat's slot migrated to another master. Each asserts, as every fault does, that
//! nothing echoed is lost, stored twice or missed by a live socket, and prints its line.

use std::time::{Duration, Instant};

use e2e::{http, within, Cluster, RedisCluster, TestDb, TestRedis};
use shared::event::Group;
use shared::keys::Keys;

use crate::faults::{account, chat, refills, roomy, summary_line};

/// The nodes are ready again (subscriptions in place, canaries back) within this of the fault.
const READY_AGAIN: Duration = Duration::from_secs(15);

/// Two nodes and a worker on a private Redis Cluster, each publication waiting for `replica_acks`.
async fn on_a_cluster(replica_acks: u32) -> (RedisCluster, Cluster) {
    let redis = RedisCluster::start().await;
    let target = TestRedis { server: None, target: redis.target() };
    let mut cluster = Cluster::start_on_redis(2, roomy(), TestDb::create().await, target, replica_acks).await;
    cluster.start_worker().await;
    (redis, cluster)
}

/// The slot of a session's keys.
async fn slot_of_session(redis: &RedisCluster, cluster: &Cluster, session: &str) -> u16 {
    let counter = Keys::new(&cluster.prefix).counter(&Group::from_name(&format!("session:{session}")));
    redis.slot_of(&counter).await
}

/// Waits until every node answers `/readyz` 200; returns how long that took from `since`.
async fn ready_again(cluster: &Cluster, since: Instant) -> f64 {
    within(READY_AGAIN, "every node is ready again", || async {
        for node in &cluster.nodes {
            if http("GET", &node.http("/readyz"), None, None).await.0 != 200 {
                return false;
            }
        }
        true
    })
    .await;
    since.elapsed().as_secs_f64()
}

/// The master holding the chat's slot is SIGKILLed under load; its replica is promoted after
/// `cluster-node-timeout`, and the dead node is started again a second later (as a supervisor
/// would), rejoining as the new master's replica. With `GATEWAY_REDIS_REPLICA_ACKS=1` nothing
/// whose sender saw it echoed is lost: what was sent meanwhile is refused (`unavailable`: until
/// the shard has a replica again no publication there is safe) or accepted after the failover,
/// every live socket hears every accepted message, and each is stored once.
#[tokio::test]
async fn a_redis_cluster_master_killed_under_load() {
    // bench/cluster-failover.sh measures the same fault without replica acks (`0`).
    let acks = std::env::var("E2E_FAILOVER_REPLICA_ACKS").ok().and_then(|a| a.parse().ok()).unwrap_or(1);
    let (mut redis, cluster) = on_a_cluster(acks).await;
    let (session, load) = chat(&cluster).await;
    load.flowing(50).await;
    let master = redis.master_of(slot_of_session(&redis, &cluster, &session).await).await;
    redis.kill(master.port);
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.restart(master.port).await;
    load.flowing(50).await;
    let ready = ready_again(&cluster, killed).await;
    let refilled = refills(&cluster).await;
    summary_line(&format!(
        "fault redis-master-killed (replica acks {acks}): nodes ready again {ready:.1} s after the kill, {refilled} refilled"
    ));
    account(&format!("redis-master-killed (replica acks {acks})"), &cluster, &session, load, killed).await;
}

/// The chat's slot is moved to another master under load (`SETSLOT … MIGRATING/IMPORTING`,
/// `MIGRATE`, `SETSLOT … NODE`): publications follow `ASK`/`MOVED`, the nodes' subscriptions
/// follow the slot (Redis unsubscribes them; they subscribe again where it is and refill), and
/// nothing is lost, doubled or missed live.
#[tokio::test]
async fn a_redis_cluster_slot_migrated_under_load() {
    let (redis, cluster) = on_a_cluster(0).await;
    let (session, load) = chat(&cluster).await;
    load.flowing(50).await;
    let slot = slot_of_session(&redis, &cluster, &session).await;
    let from = redis.master_of(slot).await;
    let nodes = redis.nodes().await;
    let to = nodes.iter().find(|n| n.master && n.id != from.id).expect("another master");
    redis.migrate_slot(slot, to).await;
    let moved = Instant::now();
    assert_eq!(redis.master_of(slot).await.id, to.id, "the slot moved");
    load.flowing(50).await;
    let ready = ready_again(&cluster, moved).await;
    let refilled = refills(&cluster).await;
    summary_line(&format!(
        "fault redis-slot-migrated: nodes ready again {ready:.1} s after the move, {refilled} refilled"
    ));
    account("redis-slot-migrated", &cluster, &session, load, moved).await;
}

/// With `GATEWAY_REDIS_REPLICA_ACKS=1` and no replica to take it (a lone redis-server), a
/// message goes out live but is not safe: its sender hears `unavailable` and no echo of it;
/// the other member's socket hears it. A message that passes its `WAIT` is echoed as usual
/// (the Redis Cluster fault above).
#[tokio::test]
async fn an_unreplicated_send_is_refused_and_its_echo_withheld() {
    let server = e2e::RedisServer::start().await;
    let target = shared::connection::RedisTarget::Single(server.url());
    let redis = TestRedis { server: Some(server), target };
    let cluster = Cluster::start_on_redis(1, roomy(), TestDb::create().await, redis, 0).await;
    cluster.user("alice", None).await;
    cluster.user("bob", None).await;
    let session = cluster.session("alice", "bob").await;
    // Alice's node waits for a replica that does not exist; bob's does not wait.
    let mut strict = cluster.node_config();
    strict.replica_acks = 1;
    let strict = e2e::Node::start(strict).await;
    let path = |user: &str| e2e::session_path(&session, &e2e::token(user));
    let mut alice = e2e::Client::connect(&strict.ws(&path("alice"))).await;
    let mut bob = e2e::Client::connect(&cluster.node(0).ws(&path("bob"))).await;
    alice.send_json(serde_json::json!({"type": "message", "content": "unsafe"})).await;
    let refused = alice.recv().await;
    assert_eq!((refused["type"].as_str(), refused["error_code"].as_str()), (Some("error"), Some("unavailable")));
    assert_eq!(bob.recv_type("message").await["content"], "unsafe", "it went out live");
    // The next frame alice hears is bob's message, not the echo of her own.
    bob.send_json(serde_json::json!({"type": "message", "content": "from bob"})).await;
    let next = alice.recv().await;
    assert_eq!(next["content"], "from bob", "alice hears bob, not her withheld echo: {next}");
}
