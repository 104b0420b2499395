//! One Redis subscription per group per node, however many local sockets; released after the
//! last local member leaves. On a Redis Cluster, group channels are sharded and spread over the
//! masters. Seen from Redis itself (`PUBSUB NUMSUB`, or `PUBSUB SHARDNUMSUB` and
//! `PUBSUB SHARDCHANNELS` on a Redis Cluster), as an operator would.

use e2e::{eventually, session_path, token, Client, Cluster};
use shared::event::Group;

async fn subscribers(cluster: &Cluster, session: &str) -> i64 {
    cluster.subscribers(&Group::from_name(&format!("session:{session}"))).await
}

#[tokio::test]
async fn a_node_subscribes_once_per_group_and_lets_go_when_empty() {
    let cluster = Cluster::start(2).await;
    cluster.user("alice", None).await;
    cluster.user("bob", None).await;
    let session = cluster.session("alice", "bob").await;
    let url = |node: usize, user: &str| cluster.node(node).ws(&session_path(&session, &token(user)));

    let on_a = vec![
        Client::connect(&url(0, "alice")).await,
        Client::connect(&url(0, "alice")).await,
        Client::connect(&url(0, "bob")).await,
    ];
    let on_b = Client::connect(&url(1, "bob")).await;
    assert_eq!(subscribers(&cluster, &session).await, 2, "one subscription per node, not per socket");

    drop(on_a);
    eventually("node A lets go of the group once its last socket left", || async {
        subscribers(&cluster, &session).await == 1
    })
    .await;
    drop(on_b);
    eventually("and node B too", || async { subscribers(&cluster, &session).await == 0 }).await;
}

/// Thirty sessions with a socket each: on a Redis Cluster their channels are sharded
/// (`PUBSUB SHARDCHANNELS`) on at least two masters and none is a classic channel; on one Redis
/// they are classic channels. Each session's messages reach its other member either way.
#[tokio::test]
async fn thirty_groups_spread_over_the_masters_of_a_redis_cluster() {
    let cluster = Cluster::start(2).await;
    let mut sockets = Vec::new();
    for i in 0..30 {
        // Two users of their own per session: the per-user socket cap stays out of the way.
        let (a, b) = (format!("a{i}"), format!("b{i}"));
        cluster.user(&a, None).await;
        cluster.user(&b, None).await;
        let session = cluster.session(&a, &b).await;
        let alice = Client::connect(&cluster.node(0).ws(&session_path(&session, &token(&a)))).await;
        let bob = Client::connect(&cluster.node(1).ws(&session_path(&session, &token(&b)))).await;
        sockets.push((alice, bob));
    }
    for (i, (alice, bob)) in sockets.iter_mut().enumerate() {
        alice.send_json(serde_json::json!({"type": "message", "content": format!("m{i}")})).await;
        assert_eq!(bob.recv_type("message").await["content"], format!("m{i}"));
    }
    let per_redis = cluster.channels("*session:*").await;
    let with = |sharded: bool| {
        per_redis.iter().filter(|r| !(if sharded { &r.sharded } else { &r.classic }).is_empty()).count()
    };
    let channels: usize = per_redis.iter().map(|r| r.classic.len() + r.sharded.len()).sum();
    assert_eq!(channels, 30, "{per_redis:?}");
    if cluster.target().is_cluster() {
        assert!(with(true) >= 2, "sharded channels on at least two masters: {per_redis:?}");
        assert_eq!(with(false), 0, "no classic channel: {per_redis:?}");
        // A group's keys and its bucket's jobs stream are in one slot, as Redis computes it.
        let keys = shared::keys::Keys::new(&cluster.prefix);
        let group = Group::from_name("session:any");
        let bucket = shared::keys::bucket_of(&group);
        let mut conn = cluster.redis_conn().await;
        let mut slots = Vec::new();
        for key in [keys.counter(&group), keys.window(&group), keys.channel(&group), keys.jobs_stream(bucket)] {
            let slot: i64 = redis::cmd("CLUSTER").arg("KEYSLOT").arg(&key).query_async(&mut conn).await.unwrap();
            slots.push(slot);
        }
        assert!(slots.iter().all(|s| *s == slots[0]), "{slots:?}");
    } else {
        assert_eq!((with(false), with(true)), (1, 0), "{per_redis:?}");
    }
}
