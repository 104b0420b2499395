//! Bad input gets the documented answer (PROTOCOL.md "bad input", "frames"), and the socket stays
//! usable where it should.

use e2e::{session_path, token, Client, Cluster, Next};
use serde_json::json;

async fn alice_in_a_session(cluster: &Cluster) -> Client {
    cluster.user("alice", None).await;
    cluster.user("bob", None).await;
    let session = cluster.session("alice", "bob").await;
    Client::connect(&cluster.node(0).ws(&session_path(&session, &token("alice")))).await
}

async fn expect_error(client: &mut Client, code: &str, mentions: &str) {
    let frame = client.recv().await;
    assert_eq!(frame["type"], "error", "{frame}");
    assert_eq!(frame["error_code"], code, "{frame}");
    let message = frame["message"].as_str().unwrap();
    assert!(message.contains(mentions), "{message:?} should mention {mentions:?}");
}

#[tokio::test]
async fn each_bad_frame_gets_its_error_and_the_socket_stays_usable() {
    let cluster = Cluster::start(1).await;
    let mut alice = alice_in_a_session(&cluster).await;

    alice.send_json(json!({"type": "message", "content": ""})).await;
    expect_error(&mut alice, "invalid_payload", "content").await;
    alice.send_json(json!({"type": "message", "content": " \n\t "})).await;
    expect_error(&mut alice, "invalid_payload", "content").await;
    alice.send_json(json!({"type": "message", "content": "x".repeat(2001)})).await;
    expect_error(&mut alice, "invalid_payload", "2000").await;
    alice.send_json(json!({"type": "message", "content": 42})).await;
    expect_error(&mut alice, "invalid_payload", "content").await;
    alice.send_json(json!({"type": "message", "content": null})).await;
    expect_error(&mut alice, "invalid_payload", "content").await;
    alice.send_json(json!({"type": "typing", "is_typing": "yes"})).await;
    expect_error(&mut alice, "invalid_payload", "is_typing").await;
    alice.send_text("{\"type\": \"message\", \"content\": ").await;
    expect_error(&mut alice, "invalid_json", "JSON").await;
    alice.send_json(json!({"type": "dance"})).await;
    expect_error(&mut alice, "unknown_message_type", "dance").await;
    alice.send_json(json!({"content": "no type"})).await;
    expect_error(&mut alice, "unknown_message_type", "type").await;

    // Exactly 2000 characters (after trimming) is fine, and so is the socket.
    let longest = format!("  {}  ", "é".repeat(2000));
    alice.send_json(json!({"type": "message", "content": longest})).await;
    assert_eq!(alice.recv().await["content"], "é".repeat(2000));
}

#[tokio::test]
async fn a_binary_frame_closes_with_1003() {
    let cluster = Cluster::start(1).await;
    let mut alice = alice_in_a_session(&cluster).await;
    alice.send_binary(vec![1, 2, 3]).await;
    assert_eq!(alice.closed().await, 1003);
}

#[tokio::test]
async fn an_oversize_frame_closes_with_1009() {
    let cluster = Cluster::start(1).await;
    let mut alice = alice_in_a_session(&cluster).await;
    let huge = json!({"type": "message", "content": "x".repeat(70 * 1024)});
    alice.send_json(huge).await;
    assert_eq!(alice.next().await, Next::Closed(1009));
}

#[tokio::test]
async fn a_user_id_in_the_payload_is_ignored() {
    let cluster = Cluster::start(1).await;
    let mut alice = alice_in_a_session(&cluster).await;
    alice.send_json(json!({"type": "message", "content": "me", "sender_id": "bob", "user_id": "bob"})).await;
    assert_eq!(alice.recv().await["sender_id"], "alice");
}
