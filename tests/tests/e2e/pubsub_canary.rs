//! A pub/sub connection that stops delivering without closing is found by the node's canary:
//! `/readyz` answers 503, the node rebuilds its subscriber connection and resubscribes, and
//! delivery to its sockets resumes by itself, within a few canary intervals.

use std::time::Duration;

use e2e::{http, session_path, token, within, Client, Cluster, Node, RedisProxy};
use serde_json::json;

/// Detection takes at most two canary intervals, the rebuild one more; this leaves room.
const RECOVERY: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_silently_stalled_subscriber_is_detected_rebuilt_and_delivers_again() {
    let cluster = Cluster::start(1).await;
    cluster.user("alice", None).await;
    cluster.user("bob", None).await;
    let session = cluster.session("alice", "bob").await;
    let proxy = RedisProxy::start(&cluster.redis.url()).await;
    let mut config = cluster.node_config();
    config.redis_url = Some(proxy.url());
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
