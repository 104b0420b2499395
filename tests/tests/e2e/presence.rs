//! Presence across nodes: the status count is cluster-wide, a user with sockets on two nodes
//! stays online until the last closes, and the users of a SIGKILLed node go offline.

use e2e::{eventually, session_path, token, Client, Cluster};

fn personal(user: &str) -> String {
    format!("/api/v1/ws/{user}?token={}", token(user))
}

#[tokio::test]
async fn connected_users_counts_distinct_users_on_every_node() {
    let cluster = Cluster::start(2).await;
    for user in ["alice", "bob"] {
        cluster.user(user, None).await;
    }
    let session = cluster.session("alice", "bob").await;
    assert_eq!(cluster.connected_users(0).await, 0);

    let alice_diary = Client::connect(&cluster.node(0).ws(&personal("alice"))).await;
    let alice_chat = Client::connect(&cluster.node(1).ws(&session_path(&session, &token("alice")))).await;
    let bob = Client::connect(&cluster.node(1).ws(&session_path(&session, &token("bob")))).await;
    for node in 0..2 {
        eventually("both users counted once, from either node", || async { cluster.connected_users(node).await == 2 })
            .await;
    }

    drop(alice_diary);
    // Alice still has a socket on node 1: she stays online. Bob leaving is what changes the count.
    drop(bob);
    eventually("bob goes offline", || async { cluster.connected_users(0).await == 1 }).await;
    drop(alice_chat);
    eventually("alice goes offline with her last socket", || async { cluster.connected_users(0).await == 0 }).await;
}

#[tokio::test]
async fn the_users_of_a_killed_node_go_offline() {
    let cluster = Cluster::start(1).await;
    for user in ["carol", "dave"] {
        cluster.user(user, None).await;
    }
    let (mut process, addr) = cluster.spawn_node_process(env!("CARGO_BIN_EXE_e2e-gateway")).await;
    let _carol = Client::connect(&format!("ws://{addr}{}", personal("carol"))).await;
    // Dave is on both nodes: the killed node must not take him offline.
    let _dave_there = Client::connect(&format!("ws://{addr}{}", personal("dave"))).await;
    let _dave_here = Client::connect(&cluster.node(0).ws(&personal("dave"))).await;
    eventually("carol and dave online", || async { cluster.connected_users(0).await == 2 }).await;

    process.kill(); // SIGKILL: no goodbye.
    eventually("carol goes offline once her node is found dead", || async { cluster.connected_users(0).await == 1 })
        .await;
}
