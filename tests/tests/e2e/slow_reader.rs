//! A client that stops reading is closed with 1013 (with a retry hint and its resume point); the
//! others in its session keep receiving. With a fixed send buffer the node finds it sooner.

use e2e::{session_path, token, Client, Cluster};
use serde_json::json;
use shared::config::Limits;

/// With the kernel's autotuned send buffer (`GATEWAY_SEND_BUFFER_BYTES=0`), the stalled client
/// is still closed, once the kernel's megabytes and then its outbox are full.
#[tokio::test]
async fn a_slow_reader_is_closed_with_1013_and_nobody_else_stalls() {
    stuck_reader_is_closed(0).await;
}

/// By default (`GATEWAY_SEND_BUFFER_BYTES` 64 KiB) what a stalled client holds in the node's
/// kernel is bounded: it is closed long before the megabytes that the kernel's autotuning would
/// take.
#[tokio::test]
async fn by_default_a_stalled_client_is_found_within_a_few_hundred_kilobytes() {
    let sent = stuck_reader_is_closed(Limits::default().send_buffer_bytes).await;
    assert!(sent * 1900 < 1024 * 1024, "closed only after {sent} messages of 1,900 bytes");
}

/// Messages sent until the stuck socket was closed.
async fn stuck_reader_is_closed(send_buffer_bytes: usize) -> usize {
    let limits = Limits {
        rate_per_sec: 100_000.0,
        rate_burst: 100_000.0,
        outbox_frames: 64,
        outbox_bytes: 128 * 1024,
        send_buffer_bytes,
        ..Limits::default()
    };
    let cluster = Cluster::start_with(2, limits).await;
    cluster.user("alice", None).await;
    cluster.user("bob", None).await;
    let session = cluster.session("alice", "bob").await;
    let mut alice = Client::connect(&cluster.node(0).ws(&session_path(&session, &token("alice")))).await;
    let mut bob = Client::connect(&cluster.node(1).ws(&session_path(&session, &token("bob")))).await;
    // Bob's second tab, on node 0, stops reading.
    let stuck =
        Client::connect_small_window(&cluster.node(0).ws(&session_path(&session, &token("bob")))).await.into_inner();

    let text = "x".repeat(1900);
    let mut sent = 0;
    while cluster.node(0).metric("gateway_slow_closes_total").await == 0 {
        assert!(sent < 20_000, "the stuck socket was never closed");
        for _ in 0..10 {
            alice.send_json(json!({"type": "message", "content": text})).await;
            sent += 1;
            // The readers keep up, message by message, while the stuck one falls behind.
            assert_eq!(alice.recv().await["content"], text);
            assert_eq!(bob.recv().await["content"], text);
        }
    }
    // Still flowing for the others after the close.
    alice.send_json(json!({"type": "message", "content": "still here"})).await;
    assert_eq!(bob.recv().await["content"], "still here");
    assert_eq!(alice.recv().await["content"], "still here");

    // The stuck client finally reads: what was queued, then the close frame, which says when to
    // come back and from where (docs/reconnect.md).
    let mut stuck = Client::from_inner(stuck);
    let (code, reason) = stuck.close_frame().await;
    assert_eq!(code, 1013, "{reason}");
    assert!(reason.starts_with("Client too slow; retry_after_ms="), "{reason}");
    assert!(reason.contains("; since="), "{reason}");
    eprintln!("send buffer {send_buffer_bytes} (0: autotuned): the stuck socket was closed after {sent} messages");
    sent
}
