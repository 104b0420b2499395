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
