//! Authorization that holds for sockets already open: membership removals and deactivations
//! made through one node act at once on sockets held by another; replies and read receipts
//! refer to messages of their own chat, whether or not the worker has stored them yet.

use e2e::{eventually, http, session_path, token, Client, Cluster, Next, API_KEY};
use serde_json::{json, Value};

async fn api(cluster: &Cluster, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let (status, reply) = http(method, &cluster.node(0).http(path), Some(API_KEY), body).await;
    assert!((200..300).contains(&status), "{method} {path}: {status} {reply}");
    (status, reply)
}

fn ws(cluster: &Cluster, node: usize, path: &str, user: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    cluster.node(node).ws(&format!("{path}{sep}token={}", token(user)))
}

/// The sender saw the parent live; the worker has stored nothing (none runs): the reply and a
/// read receipt are accepted. A message of another chat is refused for both.
#[tokio::test]
async fn a_reply_sent_the_instant_its_parent_arrived_is_accepted() {
    let mut cluster = Cluster::start(2).await;
    for user in ["alice", "bob"] {
        cluster.user(user, None).await;
    }
    cluster.chat("c1", &["alice", "bob"]).await;
    cluster.chat("c2", &["alice", "bob"]).await;
    let mut alice = Client::connect(&ws(&cluster, 0, "/api/v1/ws/chat/c1", "alice")).await;
    let mut bob = Client::connect(&ws(&cluster, 1, "/api/v1/ws/chat/c1", "bob")).await;
    let mut bob_c2 = Client::connect(&ws(&cluster, 1, "/api/v1/ws/chat/c2", "bob")).await;

    alice.send_json(json!({"type": "send_message", "data": {"content": "root"}})).await;
    let root = bob.recv().await["data"]["id"].as_str().unwrap().to_owned();
    bob.send_json(json!({"type": "send_message", "data": {"content": "re", "parent_message_id": root}})).await;
    let reply = bob.recv().await;
    assert_eq!(
        (reply["type"].as_str(), reply["data"]["parent_message_id"].as_str()),
        (Some("new_message"), Some(root.as_str()))
    );
    bob.send_json(json!({"type": "read_receipt", "data": {"message_id": root}})).await;
    assert_eq!(bob.recv().await["type"], "read_receipt");

    // The same message id from the socket of another chat: refused, whoever saw it.
    bob_c2.send_json(json!({"type": "send_message", "data": {"content": "x", "parent_message_id": root}})).await;
    assert_eq!(bob_c2.recv().await["error_code"], "invalid_payload");
    bob_c2.send_json(json!({"type": "read_receipt", "data": {"message_id": root}})).await;
    let refused = bob_c2.recv().await;
    assert_eq!(refused["error_code"], "invalid_payload");
    assert!(refused["message"].as_str().unwrap().contains("message_id"), "{refused}");

    cluster.start_worker().await;
    eventually("both persisted, the reply with its parent", || async {
        let history = cluster.chat_history("c1").await;
        history.len() == 2 && history[0]["parent_message_id"] == root.as_str()
    })
    .await;
}

/// Each removal, made through node 0, closes the removed user's socket on node 1 with 4004;
/// the remaining member's socket keeps working.
#[tokio::test]
async fn removed_members_lose_their_open_sockets_on_every_node() {
    let cluster = Cluster::start(2).await;
    for user in ["alice", "bob", "carol"] {
        cluster.user(user, None).await;
    }
    let session = cluster.session("alice", "bob").await;
    cluster.chat("c1", &["alice", "bob"]).await;
    api(&cluster, "PUT", "/api/v1/workspaces/w1", Some(json!({"member_ids": ["alice", "bob"]}))).await;
    api(&cluster, "PUT", "/api/v1/focus-sessions/f1", Some(json!({"participant_ids": ["alice", "bob"]}))).await;

    let mut bob_session = Client::connect(&cluster.node(1).ws(&session_path(&session, &token("bob")))).await;
    let mut alice_session = Client::connect(&cluster.node(0).ws(&session_path(&session, &token("alice")))).await;
    let mut bob_chat = Client::connect(&ws(&cluster, 1, "/api/v1/ws/chat/c1", "bob")).await;
    let mut bob_tasks = Client::connect(&ws(&cluster, 1, "/ws/tasks/w1", "bob")).await;
    let mut bob_focus = Client::connect(&ws(&cluster, 1, "/ws/focus/f1", "bob")).await;
    assert_eq!(bob_focus.recv().await["action"], "state");

    cluster.session_with_id(&session, "alice", "carol").await;
    assert_eq!(bob_session.closed().await, 4004);
    alice_session.send_json(json!({"type": "message", "content": "still here"})).await;
    assert_eq!(alice_session.recv().await["content"], "still here");

    cluster.chat("c1", &["alice"]).await;
    assert_eq!(bob_chat.closed().await, 4004);
    api(&cluster, "PUT", "/api/v1/workspaces/w1", Some(json!({"member_ids": ["alice"]}))).await;
    assert_eq!(bob_tasks.closed().await, 4004);
    api(&cluster, "PUT", "/api/v1/focus-sessions/f1", Some(json!({"participant_ids": ["alice"]}))).await;
    assert_eq!(bob_focus.closed().await, 4004);
}

/// A deactivated user's sockets, of any app, on another node, close with 4002; a new one is
/// refused with 4002.
#[tokio::test]
async fn a_deactivated_user_loses_every_open_socket() {
    let cluster = Cluster::start(2).await;
    for user in ["alice", "bob"] {
        cluster.user(user, None).await;
    }
    cluster.chat("c1", &["alice", "bob"]).await;
    let mut notifications = Client::connect(&ws(&cluster, 1, "/ws/notifications", "bob")).await;
    let mut pythia = Client::connect(&ws(&cluster, 1, "/ws", "bob")).await;
    assert_eq!(pythia.recv().await["type"], "connection_established");
    let mut chat = Client::connect(&ws(&cluster, 0, "/api/v1/ws/chat/c1", "bob")).await;
    let mut alice = Client::connect(&ws(&cluster, 1, "/api/v1/ws/chat/c1", "alice")).await;

    api(&cluster, "PUT", "/api/v1/users/bob", Some(json!({"username": "bob", "is_active": false}))).await;
    for socket in [&mut notifications, &mut pythia, &mut chat] {
        assert_eq!(socket.closed().await, 4002);
    }
    assert_eq!(e2e::close_code_of(&ws(&cluster, 1, "/ws/notifications", "bob")).await, 4002);
    alice.send_json(json!({"type": "send_message", "data": {"content": "alone"}})).await;
    assert_eq!(alice.recv().await["data"]["content"], "alone");
}

/// Removed from a private channel through node 0, a user's Pythia socket on node 1 leaves its
/// room (`channel_left`), the others hear `user_left`, and the channel's messages stop reaching
/// them; the socket itself stays open.
#[tokio::test]
async fn a_user_removed_from_a_private_channel_leaves_its_room() {
    let cluster = Cluster::start(2).await;
    for user in ["ann", "cat"] {
        cluster.user(user, None).await;
    }
    cluster.channel("secret", "Secret", true, &["ann", "cat"]).await;
    let mut cat = Client::connect(&ws(&cluster, 1, "/ws", "cat")).await;
    assert_eq!(cat.recv().await["type"], "connection_established");
    let mut ann = Client::connect(&ws(&cluster, 0, "/ws", "ann")).await;
    assert_eq!(ann.recv().await["type"], "connection_established");

    api(&cluster, "DELETE", "/api/v1/channels/secret/members/cat", None).await;
    let left = cat.recv_type("channel_left").await;
    assert_eq!(left["channel_id"], "secret");
    let gone = ann.recv_type("user_left").await;
    assert_eq!((gone["user_id"].as_str(), gone["channel_id"].as_str()), (Some("cat"), Some("secret")));

    let body = json!({"channel_id": "secret", "content": "members only"});
    let (status, _) = http("POST", &cluster.node(0).http("/api/v1/messages/"), Some(&token("ann")), Some(body)).await;
    assert_eq!(status, 201);
    assert_eq!(ann.recv_type("new_message").await["data"]["content"], "members only");
    cat.send_json(json!({"type": "ping"})).await;
    loop {
        match cat.next().await {
            Next::Frame(frame) if frame["type"] == "pong" => break,
            Next::Frame(frame) => assert_ne!(frame["type"], "new_message", "a removed member got {frame}"),
            Next::Closed(code) => panic!("the socket closed with {code}"),
        }
    }
    cat.send_json(json!({"type": "join_channel", "channel_id": "secret"})).await;
    assert_eq!(cat.recv_type("error").await["error_code"], "access_denied");
}
