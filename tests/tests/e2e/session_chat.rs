//! The Send Buddy session chat across two nodes, as sendbuddy.md's clients use it.

use e2e::{session_path, token, Client, Cluster};
use serde_json::json;

/// Alice on node A and Bob on node B, in one session.
async fn two_participants(cluster: &Cluster) -> (String, Client, Client) {
    cluster.user("alice", Some("Alice Example")).await;
    cluster.user("bob", None).await;
    let session = cluster.session("alice", "bob").await;
    let alice = Client::connect(&cluster.node(0).ws(&session_path(&session, &token("alice")))).await;
    let bob = Client::connect(&cluster.node(1).ws(&session_path(&session, &token("bob")))).await;
    (session, alice, bob)
}

#[tokio::test]
async fn messages_cross_nodes_in_send_order_and_echo_to_the_sender() {
    let cluster = Cluster::start(2).await;
    let (session, mut alice, mut bob) = two_participants(&cluster).await;

    for i in 0..15 {
        alice.send_json(json!({"type": "message", "content": format!("a{i}")})).await;
        bob.send_json(json!({"type": "message", "content": format!("b{i}")})).await;
    }
    for client in [&mut alice, &mut bob] {
        let (mut from_alice, mut from_bob) = (Vec::new(), Vec::new());
        for _ in 0..30 {
            let frame = client.recv().await;
            assert_eq!(frame["type"], "message");
            match frame["sender_id"].as_str().unwrap() {
                "alice" => from_alice.push(frame),
                "bob" => from_bob.push(frame),
                other => panic!("unexpected sender {other}"),
            }
        }
        let texts = |frames: &[serde_json::Value]| {
            frames.iter().map(|f| f["content"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
        };
        assert_eq!(texts(&from_alice), (0..15).map(|i| format!("a{i}")).collect::<Vec<_>>());
        assert_eq!(texts(&from_bob), (0..15).map(|i| format!("b{i}")).collect::<Vec<_>>());
        // Field by field, as the guide's "Example Response".
        let first = &from_alice[0];
        assert_eq!(first.as_object().unwrap().len(), 6, "{first}");
        assert_eq!(first["sender_name"], "Alice Example", "display_name is preferred");
        assert_eq!(from_bob[0]["sender_name"], "bob", "username when there is no display_name");
        let id = uuid::Uuid::parse_str(first["message_id"].as_str().unwrap()).unwrap();
        assert_eq!(id.get_version_num(), 7);
        let created = first["created_at"].as_str().unwrap();
        assert!(created.ends_with('Z') && created.len() == "2026-01-13T18:30:00.123456Z".len(), "{created}");
    }
    let _ = session;
}

#[tokio::test]
async fn typing_reaches_only_the_other_participant() {
    let cluster = Cluster::start(2).await;
    let (_session, mut alice, mut bob) = two_participants(&cluster).await;

    alice.send_json(json!({"type": "typing", "is_typing": true})).await;
    alice.send_json(json!({"type": "message", "content": "done typing"})).await;
    // Bob sees the typing frame, then the message.
    let typing = bob.recv().await;
    assert_eq!(
        typing,
        json!({"type": "typing", "sender_id": "alice", "sender_name": "Alice Example", "is_typing": true})
    );
    assert_eq!(bob.recv().await["content"], "done typing");
    // Alice's own next frame is her message: her typing never came back to her.
    assert_eq!(alice.recv().await["content"], "done typing");

    bob.send_json(json!({"type": "typing", "is_typing": false})).await;
    let typing = alice.recv().await;
    assert_eq!(typing["is_typing"], false);
    assert_eq!(typing["sender_id"], "bob");
}

#[tokio::test]
async fn a_second_socket_of_the_sender_gets_messages_but_not_its_own_typing() {
    let cluster = Cluster::start(2).await;
    let (session, mut alice, mut bob) = two_participants(&cluster).await;
    let mut alice_phone = Client::connect(&cluster.node(1).ws(&session_path(&session, &token("alice")))).await;

    alice.send_json(json!({"type": "typing", "is_typing": true})).await;
    alice.send_json(json!({"type": "message", "content": "hi"})).await;
    assert_eq!(bob.recv().await["type"], "typing");
    assert_eq!(bob.recv().await["content"], "hi");
    assert_eq!(alice_phone.recv().await["content"], "hi", "typing never reaches the sender's own sockets");
    assert_eq!(alice.recv().await["content"], "hi");
}

#[tokio::test]
async fn the_path_works_without_the_trailing_slash() {
    let cluster = Cluster::start(1).await;
    cluster.user("alice", None).await;
    cluster.user("bob", None).await;
    let session = cluster.session("alice", "bob").await;
    let mut alice =
        Client::connect(&cluster.node(0).ws(&format!("/ws/sessions/{session}?token={}", token("alice")))).await;
    alice.send_json(json!({"type": "message", "content": "no slash"})).await;
    assert_eq!(alice.recv().await["content"], "no slash");
}
