//! Per-socket limits: the rate limit (excess frames get `rate_limited`, sustained abuse closes with
//! 1008) and the heartbeat (a peer that stops answering is closed).

use std::time::Duration;

use e2e::{eventually, session_path, token, Client, Cluster};
use serde_json::json;
use shared::config::Limits;

#[tokio::test]
async fn excess_frames_are_refused_then_abuse_closes_the_socket() {
    // A bucket of 3 that practically never refills: the count, not the clock, decides.
    let limits = Limits { rate_per_sec: 0.0001, rate_burst: 3.0, ..Limits::default() };
    let cluster = Cluster::start_with(1, limits).await;
    cluster.user("alice", None).await;
    cluster.user("bob", None).await;
    let session = cluster.session("alice", "bob").await;
    let mut alice = Client::connect(&cluster.node(0).ws(&session_path(&session, &token("alice")))).await;

    for i in 0..3 {
        alice.send_json(json!({"type": "message", "content": format!("ok {i}")})).await;
        assert_eq!(alice.recv().await["content"], format!("ok {i}"));
    }
    for _ in 0..3 {
        alice.send_json(json!({"type": "message", "content": "too many"})).await;
        let refused = alice.recv().await;
        assert_eq!(refused["type"], "error");
        assert_eq!(refused["error_code"], "rate_limited");
    }
    // Keeping on after being told is abuse.
    alice.send_json(json!({"type": "message", "content": "still more"})).await;
    assert_eq!(alice.closed().await, 1008);
}

#[tokio::test]
async fn a_peer_that_stops_answering_pings_is_closed() {
    let limits =
        Limits { ping_interval: Duration::from_secs(1), idle_timeout: Duration::from_secs(2), ..Limits::default() };
    let cluster = Cluster::start_with(1, limits).await;
    cluster.user("alice", None).await;
    cluster.user("bob", None).await;
    let session = cluster.session("alice", "bob").await;
    // A client that never reads never answers the server's pings: to the server, a dead peer.
    let silent = Client::connect(&cluster.node(0).ws(&session_path(&session, &token("alice")))).await.into_inner();
    eventually("the node closes the silent socket", || async {
        cluster.node(0).metric("gateway_sockets_open").await == 0
    })
    .await;
    // What the server said last, once the client reads again: going away (1001).
    assert_eq!(Client::from_inner(silent).closed().await, 1001);
}
