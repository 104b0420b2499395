//! Embedded mode (no Redis, SQLite, in-process worker): the same session flow.

use e2e::{eventually, http, session_path, token, Client, Node, TempDir, API_KEY, JWT_SECRET};
use serde_json::{json, Value};
use shared::auth::JwtKey;
use shared::config::{GatewayConfig, Limits};

#[tokio::test]
async fn the_session_flow_works_in_embedded_mode() {
    let dir = TempDir::new("embedded");
    let config = GatewayConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        redis_url: None,
        database_url: format!("sqlite://{}", dir.path().join("nested/gateway.db").display()),
        jwt: JwtKey::Hs256(JWT_SECRET.into()),
        api_key: API_KEY.into(),
        anonymous_personal: false,
        limits: Limits::default(),
        redis_prefix: "rt:".into(),
        data_dir: Some(dir.path().to_owned()),
        generated: Vec::new(),
    };
    let node = Node::start(config).await;
    let api = |path: &str| node.http(path);
    for (id, name) in [("alice", "Alice"), ("bob", "Bob")] {
        let (status, _) = http(
            "PUT",
            &api(&format!("/api/v1/users/{id}")),
            Some(API_KEY),
            Some(json!({"username": id, "display_name": name})),
        )
        .await;
        assert_eq!(status, 200);
    }
    let session = uuid::Uuid::new_v4().to_string();
    let (status, _) = http(
        "PUT",
        &api(&format!("/api/v1/sessions/{session}")),
        Some(API_KEY),
        Some(json!({"inviter_id": "alice", "invitee_id": "bob"})),
    )
    .await;
    assert_eq!(status, 200);

    let mut alice = Client::connect(&node.ws(&session_path(&session, &token("alice")))).await;
    let mut bob = Client::connect(&node.ws(&session_path(&session, &token("bob")))).await;
    alice.send_json(json!({"type": "typing", "is_typing": true})).await;
    alice.send_json(json!({"type": "message", "content": "Hello, climbing partner!"})).await;
    assert_eq!(bob.recv().await["type"], "typing");
    let received = bob.recv().await;
    assert_eq!(received["content"], "Hello, climbing partner!");
    assert_eq!(received["sender_name"], "Alice");
    assert_eq!(alice.recv().await, received);
    bob.send_json(json!({"type": "message", "content": "On belay"})).await;
    assert_eq!(alice.recv().await["content"], "On belay");
    assert_eq!(e2e::close_code_of(&node.ws(&session_path(&session, &token("eve")))).await, 4002);

    let history = || async {
        let (_, body) = http("GET", &api(&format!("/api/v1/sessions/{session}/messages")), Some(API_KEY), None).await;
        body["messages"].as_array().cloned().unwrap_or_default()
    };
    eventually("both messages persisted in SQLite", || async { history().await.len() == 2 }).await;
    let messages = history().await;
    assert_eq!(messages[0]["content"], "On belay");
    assert_eq!(messages[1], received);
    eventually("last_message_at follows", || async {
        let (_, row) = http("GET", &api(&format!("/api/v1/sessions/{session}")), Some(API_KEY), None).await;
        row["last_message_at"] == messages[0]["created_at"]
    })
    .await;
    let _: Value = Value::Null;
    node.shutdown().await;
}
