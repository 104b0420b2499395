//! A pub/sub connection that stops delivering without closing is found by the node's canary:
//! `/readyz` answers 503, the node rebuilds its subscriber connection and resubscribes, and
//! delivery to its sockets resumes by itself, within a few canary intervals.

use std::time::Duration;

use e2e::{http, session_path, token, within, Client, Cluster, Node, RedisProxy};
use serde_json::json;
use shared::config::Limits;

/// Detection takes at most two canary intervals, the rebuild one more; this leaves room.
const RECOVERY: Duration = Duration::from_secs(10);

/// A node's canaries go through every bucket: on one Redis sixteen classic channels, on a Redis
/// Cluster sharded channels on every master (one per sharded subscriber connection). The node is
/// ready once all came back, and none fails while everything is well.
#[tokio::test]
async fn the_canaries_cross_every_subscriber_connection() {
    let limits = Limits { canary_interval: Duration::from_millis(200), ..Limits::default() };
    let cluster = Cluster::start_with(1, limits).await;
    let node = cluster.node(0);
    within(RECOVERY, "the node is ready", || async { http("GET", &node.http("/readyz"), None, None).await.0 == 200 })
        .await;
    let per_redis = cluster.channels("*canary:*").await;
    let on_cluster = cluster.target().is_cluster();
    for redis in &per_redis {
        let (ours, other) =
            if on_cluster { (&redis.sharded, &redis.classic) } else { (&redis.classic, &redis.sharded) };
        assert!(!ours.is_empty(), "canaries on {}: {per_redis:?}", redis.redis);
        assert!(other.is_empty(), "{per_redis:?}");
    }
    let total: usize = per_redis.iter().map(|r| r.classic.len() + r.sharded.len()).sum();
    assert_eq!(total, shared::keys::BUCKETS, "one canary group per bucket: {per_redis:?}");
    if on_cluster {
        assert!(per_redis.len() >= 3, "every master carries canaries: {per_redis:?}");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(node.metric("gateway_canary_failures_total").await, 0);
}

#[tokio::test]
async fn a_silently_stalled_subscriber_is_detected_rebuilt_and_delivers_again() {
    let mut cluster = Cluster::start(1).await;
    cluster.user("alice", None).await;
    cluster.user("bob", None).await;
    let session = cluster.session("alice", "bob").await;
    let proxy = RedisProxy::start(&cluster.redis().url()).await;
    let mut config = cluster.node_config();
    config.redis = Some(shared::connection::RedisTarget::Single(proxy.url()));
    config.limits.canary_interval = Duration::from_millis(500);
    let stalled = Node::start(config).await;

    let mut alice = Client::connect(&cluster.node(0).ws(&session_path(&session, &token("alice")))).await;
    let mut bob = Client::connect(&stalled.ws(&session_path(&session, &token("bob")))).await;
    alice.send_json(json!({"type": "message", "content": "before"})).await;
    assert_eq!(bob.recv().await["content"], "before");
    let ready = || async { http("GET", &stalled.http("/readyz"), None, None).await.0 };
    within(RECOVERY, "the node is ready", || async { ready().await == 200 }).await;

    assert_eq!(proxy.freeze_subscribers(), 1, "one pub/sub connection per node");
    within(RECOVERY, "/readyz answers 503 once a canary is overdue", || async { ready().await == 503 }).await;
    within(RECOVERY, "ready again on a new connection", || async { ready().await == 200 }).await;
    assert!(stalled.metric("gateway_canary_failures_total").await >= 1);

    // Delivery resumed: bob's socket, open all along, hears alice again.
    alice.send_json(json!({"type": "message", "content": "after"})).await;
    loop {
        let frame = bob.recv().await;
        if frame["content"] == "after" {
            break;
        }
        assert_eq!(frame["type"], "message", "{frame}");
    }
}
