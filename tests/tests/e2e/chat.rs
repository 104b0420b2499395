//! The chat socket (chat.txt) across two nodes: messages, threads, typing, read receipts, direct
//! messages to the personal socket, membership.

use e2e::{close_code_of, eventually, http, token, Client, Cluster, Node, API_KEY};
use serde_json::{json, Value};
use shared::ids::MessageId;
use shared::store::Store;

fn chat_path(chat: &str, user: &str) -> String {
    format!("/api/v1/ws/chat/{chat}?token={}", token(user))
}

fn personal_path(user: &str) -> String {
    format!("/api/v1/ws/{user}?token={}", token(user))
}

async fn send(client: &mut Client, content: &str) {
    client.send_json(json!({"type": "send_message", "data": {"content": content, "message_type": "text", "parent_message_id": null}})).await;
}

/// alice on the first node and bob on the last, both in chat `c1`.
async fn setup(cluster: &Cluster) -> (Client, Client) {
    for user in ["alice", "bob", "eve"] {
        cluster.user(user, None).await;
    }
    cluster.chat("c1", &["alice", "bob"]).await;
    cluster.chat("c2", &["alice", "eve"]).await;
    let alice = Client::connect(&cluster.node(0).ws(&chat_path("c1", "alice"))).await;
    let bob = Client::connect(&cluster.node(cluster.nodes.len() - 1).ws(&chat_path("c1", "bob"))).await;
    (alice, bob)
}

#[tokio::test]
async fn new_messages_reach_the_whole_chat_in_the_guide_shape() {
    let cluster = Cluster::start(2).await;
    let (mut alice, mut bob) = setup(&cluster).await;
    send(&mut alice, "Your message content").await;
    let seen_by_bob = bob.recv().await;
    assert_eq!(alice.recv().await, seen_by_bob, "the sender gets the same frame");
    assert_eq!(seen_by_bob["type"], "new_message");
    let data = &seen_by_bob["data"];
    assert_eq!(data.as_object().unwrap().len(), 9, "{data}");
    assert_eq!(data["chat_id"], "c1");
    assert_eq!(data["sender_id"], "alice");
    assert_eq!(data["content"], "Your message content");
    assert_eq!(data["message_type"], "text");
    assert_eq!(data["parent_message_id"], Value::Null);
    assert_eq!(data["created_at"], data["updated_at"]);
    assert!(MessageId::parse(data["id"].as_str().unwrap()).is_ok());
    let sender = data["sender"].as_object().unwrap();
    assert_eq!(sender.keys().collect::<Vec<_>>(), ["created_at", "email", "id", "is_active", "username"]);
    assert_eq!(
        (sender["id"].as_str(), sender["username"].as_str(), sender["is_active"].as_bool()),
        (Some("alice"), Some("alice"), Some(true))
    );
    assert!(sender["created_at"].as_str().unwrap().ends_with('Z'));

    // Image and file types pass; anything else is refused, naming the field.
    alice.send_json(json!({"type": "send_message", "data": {"content": "pic.png", "message_type": "image"}})).await;
    assert_eq!(bob.recv().await["data"]["message_type"], "image");
    alice.recv().await;
    alice.send_json(json!({"type": "send_message", "data": {"content": "x", "message_type": "video"}})).await;
    let error = alice.recv().await;
    assert_eq!(error["error_code"], "invalid_payload");
    assert!(error["message"].as_str().unwrap().contains("message_type"));
}

#[tokio::test]
async fn threads_stay_in_their_chat_and_history_keeps_them() {
    let mut cluster = Cluster::start(2).await;
    cluster.start_worker().await;
    let (mut alice, mut bob) = setup(&cluster).await;
    let mut alice_c2 = Client::connect(&cluster.node(0).ws(&chat_path("c2", "alice"))).await;
    send(&mut alice, "root").await;
    let root = alice.recv().await["data"]["id"].as_str().unwrap().to_owned();
    bob.recv().await;
    send(&mut alice_c2, "elsewhere").await;
    let elsewhere = alice_c2.recv().await["data"]["id"].as_str().unwrap().to_owned();
    eventually("both persisted", || async {
        cluster.chat_history("c1").await.len() == 1 && cluster.chat_history("c2").await.len() == 1
    })
    .await;

    bob.send_json(json!({"type": "send_message", "data": {"content": "reply", "parent_message_id": root}})).await;
    let reply = alice.recv().await;
    assert_eq!(reply["data"]["parent_message_id"], root.as_str());
    bob.recv().await;
    for parent in [elsewhere.clone(), uuid::Uuid::now_v7().to_string()] {
        bob.send_json(json!({"type": "send_message", "data": {"content": "lost", "parent_message_id": parent}})).await;
        let error = bob.recv().await;
        assert_eq!(error["error_code"], "invalid_payload", "{error}");
        assert!(error["message"].as_str().unwrap().contains("parent_message_id"));
    }

    eventually("the reply persisted", || async { cluster.chat_history("c1").await.len() == 2 }).await;
    let history = cluster.chat_history("c1").await;
    assert_eq!(history[0], reply["data"], "history items are new_message.data");
    let (_, chat) = http("GET", &cluster.node(1).http("/api/v1/chats/c1"), Some(API_KEY), None).await;
    assert_eq!(chat["last_message_at"], history[0]["created_at"]);
    assert_eq!(chat["member_ids"], json!(["alice", "bob"]));
}

#[tokio::test]
async fn typing_goes_to_the_others_and_receipts_to_all_once_persisted() {
    let mut cluster = Cluster::start(2).await;
    cluster.start_worker().await;
    let (mut alice, mut bob) = setup(&cluster).await;

    bob.send_json(json!({"type": "typing_indicator", "data": {"is_typing": true, "user_id": "mallory"}})).await;
    send(&mut bob, "after typing").await;
    assert_eq!(alice.recv().await, json!({"type": "typing_indicator", "data": {"is_typing": true, "user_id": "bob"}}));
    let message = alice.recv().await;
    assert_eq!(bob.recv().await, message, "bob's own typing never came back to him");
    let id = message["data"]["id"].as_str().unwrap().to_owned();

    for _ in 0..2 {
        alice.send_json(json!({"type": "read_receipt", "data": {"message_id": id, "user_id": "mallory"}})).await;
        let expected = json!({"type": "read_receipt", "data": {"message_id": id, "user_id": "alice"}});
        assert_eq!(bob.recv().await, expected);
        assert_eq!(alice.recv().await, expected);
    }
    let store = Store::connect(&cluster.db.url(), 1).await.unwrap();
    let message_id = MessageId::parse(&id).unwrap();
    eventually("the receipt is persisted", || async { store.read_count(&message_id).await.unwrap() >= 1 }).await;
    eventually("the message is persisted", || async { cluster.chat_history("c1").await.len() == 1 }).await;
    assert_eq!(store.read_count(&message_id).await.unwrap(), 1, "once per user and message");
}

#[tokio::test]
async fn direct_messages_reach_the_recipients_personal_socket_on_any_node() {
    let cluster = Cluster::start(2).await;
    let (mut alice, mut bob_chat) = setup(&cluster).await;
    let mut bob_personal = Client::connect(&cluster.node(1).ws(&personal_path("bob"))).await;

    alice
        .send_json(json!({"type": "direct_message", "data": {"content": "psst", "message_type": "text", "recipient_id": "bob", "chat_id": "c1"}}))
        .await;
    let dm = bob_personal.recv().await;
    assert_eq!(dm["type"], "new_direct_message");
    assert_eq!(dm["data"]["content"], "psst");
    assert_eq!(dm["data"]["sender_id"], "alice");
    assert_eq!(dm["data"]["chat_id"], "c1");
    assert_eq!(dm["data"]["sender"]["username"], "alice");

    // Not a member (eve is not in c1), or a chat the sender is not in: refused.
    alice
        .send_json(json!({"type": "direct_message", "data": {"content": "x", "recipient_id": "eve", "chat_id": "c1"}}))
        .await;
    assert_eq!(alice.recv().await["error_code"], "access_denied");
    cluster.chat("c3", &["bob", "eve"]).await;
    alice
        .send_json(json!({"type": "direct_message", "data": {"content": "x", "recipient_id": "bob", "chat_id": "c3"}}))
        .await;
    assert_eq!(alice.recv().await["error_code"], "access_denied");

    // The DM went to bob's personal socket only: his chat socket's next frame is a chat message.
    send(&mut alice, "public").await;
    assert_eq!(bob_chat.recv().await["data"]["content"], "public");
    assert!(cluster.chat_history("c1").await.iter().all(|m| m["content"] != "psst"));
}

#[tokio::test]
async fn a_tokenless_personal_socket_never_receives_direct_messages() {
    let cluster = Cluster::start(1).await;
    let (mut alice, _bob) = setup(&cluster).await;
    let mut config = cluster.node_config();
    config.anonymous_personal = true;
    let open_node = Node::start(config).await;
    let mut anonymous_bob = Client::connect(&open_node.ws("/api/v1/ws/bob")).await;
    let mut bob_personal = Client::connect(&open_node.ws(&personal_path("bob"))).await;

    alice
        .send_json(json!({"type": "direct_message", "data": {"content": "for bob only", "recipient_id": "bob"}}))
        .await;
    assert_eq!(bob_personal.recv().await["data"]["content"], "for bob only");
    anonymous_bob.send_json(json!({"type": "ping"})).await;
    assert_eq!(anonymous_bob.recv().await["type"], "pong", "nothing private arrived before the pong");
}

#[tokio::test]
async fn non_members_are_closed_with_4004() {
    let cluster = Cluster::start(1).await;
    let _ = setup(&cluster).await;
    let node = cluster.node(0);
    assert_eq!(close_code_of(&node.ws(&chat_path("c1", "eve"))).await, 4004);
    assert_eq!(close_code_of(&node.ws(&chat_path("no-such-chat", "alice"))).await, 4004);
    assert_eq!(close_code_of(&node.ws("/api/v1/ws/chat/c1")).await, 4001);
    // Membership changes take effect for new sockets at once.
    cluster.chat("c1", &["alice", "bob", "eve"]).await;
    let mut eve = Client::connect(&node.ws(&chat_path("c1", "eve"))).await;
    send(&mut eve, "in now").await;
    assert_eq!(eve.recv().await["data"]["content"], "in now");
    let (status, _) = http("GET", &node.http("/api/v1/chats/c1/messages"), Some(&token("eve")), None).await;
    assert_eq!(status, 200);
    cluster.chat("c1", &["alice", "bob"]).await;
    let (status, _) = http("GET", &node.http("/api/v1/chats/c1/messages"), Some(&token("eve")), None).await;
    assert_eq!(status, 404);
}
