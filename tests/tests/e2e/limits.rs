//! Per-socket rate limit: excess frames get `rate_limited`, sustained abuse closes with 1008.

use e2e::{session_path, token, Client, Cluster};
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
