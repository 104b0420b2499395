//! One Redis subscription per group per node, however many local sockets; released after the
//! last local member leaves. Seen from Redis itself (`PUBSUB NUMSUB`, or `PUBSUB SHARDNUMSUB` on a Redis Cluster), as an operator would.

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
