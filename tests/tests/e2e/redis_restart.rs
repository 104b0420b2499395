//! Redis goes away under live sockets and comes back: nodes reconnect and resubscribe by
//! themselves, sockets stay open, and a message sent meanwhile is refused with `unavailable`.

use e2e::{eventually, http, session_path, token, Client, Cluster};
use serde_json::json;

async fn ready(url: String) -> bool {
    http("GET", &url, None, None).await.0 == 200
}

#[tokio::test]
async fn nodes_ride_out_a_redis_restart() {
    let mut cluster = Cluster::start(2).await;
    cluster.start_worker().await;
    cluster.user("alice", None).await;
    cluster.user("bob", None).await;
    let session = cluster.session("alice", "bob").await;
    let mut alice = Client::connect(&cluster.node(0).ws(&session_path(&session, &token("alice")))).await;
    let mut bob = Client::connect(&cluster.node(1).ws(&session_path(&session, &token("bob")))).await;
    alice.send_json(json!({"type": "message", "content": "before"})).await;
    assert_eq!(bob.recv().await["content"], "before");
    assert_eq!(alice.recv().await["content"], "before");

    cluster.redis().kill();
    let readyz: Vec<String> = cluster.nodes.iter().map(|n| n.http("/readyz")).collect();
    for url in &readyz {
        eventually("the node reports itself not ready", || async { !ready(url.clone()).await }).await;
    }
    alice.send_json(json!({"type": "message", "content": "during"})).await;
    let refused = alice.recv().await;
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["error_code"], "unavailable");

    cluster.redis().start_again().await;
    for url in &readyz {
        eventually("the node reconnects and resubscribes", || async { ready(url.clone()).await }).await;
    }
    // The same sockets, both directions.
    alice.send_json(json!({"type": "message", "content": "after"})).await;
    assert_eq!(bob.recv().await["content"], "after");
    assert_eq!(alice.recv().await["content"], "after");
    bob.send_json(json!({"type": "message", "content": "reply"})).await;
    assert_eq!(alice.recv().await["content"], "reply");

    eventually("what was accepted is persisted", || async { cluster.history(&session).await.len() == 3 }).await;
    let contents: Vec<_> =
        cluster.history(&session).await.iter().map(|m| m["content"].as_str().unwrap().to_owned()).collect();
    assert_eq!(contents, ["reply", "after", "before"], "the refused message was never accepted");
}
