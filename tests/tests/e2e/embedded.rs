//! Embedded mode (no Redis, SQLite, in-process worker): every app's flow, as in cluster mode.

use e2e::{eventually, http, session_path, token, Client, Node, TempDir, API_KEY, JWT_SECRET};
use serde_json::{json, Value};
use shared::auth::JwtKey;
use shared::config::{GatewayConfig, Limits};

/// An embedded node on a fresh SQLite file, with users `names`.
async fn embedded(dir: &TempDir, users: &[&str]) -> Node {
    let node = Node::start(embedded_config(dir)).await;
    for user in users {
        let body = json!({"username": user});
        let (status, _) = http("PUT", &node.http(&format!("/api/v1/users/{user}")), Some(API_KEY), Some(body)).await;
        assert_eq!(status, 200);
    }
    node
}

async fn api(node: &Node, method: &str, path: &str, bearer: &str, body: Option<Value>) -> Value {
    let (status, reply) = http(method, &node.http(path), Some(bearer), body).await;
    assert!((200..300).contains(&status), "{method} {path}: {status} {reply}");
    reply
}

fn ws(node: &Node, path: &str, user: &str) -> String {
    node.ws(&format!("{path}?token={}", token(user)))
}

fn embedded_config(dir: &TempDir) -> GatewayConfig {
    GatewayConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        redis: None,
        replica_acks: 0,
        database_url: format!("sqlite://{}", dir.path().join("nested/gateway.db").display()),
        jwt: JwtKey::Hs256(JWT_SECRET.into()),
        api_key: API_KEY.into(),
        anonymous_personal: false,
        limits: Limits::default(),
        redis_prefix: "rt:".into(),
        window: Default::default(),
        data_dir: Some(dir.path().to_owned()),
        generated: Vec::new(),
    }
}

#[tokio::test]
async fn the_session_flow_works_in_embedded_mode() {
    let dir = TempDir::new("embedded");
    let config = embedded_config(&dir);
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

#[tokio::test]
async fn the_chat_flow_works_in_embedded_mode() {
    let dir = TempDir::new("embedded-chat");
    let node = embedded(&dir, &["ann", "ben"]).await;
    api(&node, "PUT", "/api/v1/chats/c1", API_KEY, Some(json!({"member_ids": ["ann", "ben"]}))).await;
    let mut ann = Client::connect(&ws(&node, "/api/v1/ws/chat/c1", "ann")).await;
    let mut ben = Client::connect(&ws(&node, "/api/v1/ws/chat/c1", "ben")).await;
    let mut ben_personal = Client::connect(&ws(&node, "/api/v1/ws/ben", "ben")).await;

    ann.send_json(json!({"type": "send_message", "data": {"content": "root"}})).await;
    let root = ben.recv().await["data"]["id"].as_str().unwrap().to_owned();
    ben.send_json(json!({"type": "send_message", "data": {"content": "reply", "parent_message_id": root}})).await;
    assert_eq!(ann.recv_type("new_message").await["data"]["parent_message_id"], json!(null));
    assert_eq!(ann.recv_type("new_message").await["data"]["parent_message_id"], root.as_str());
    ben.send_json(json!({"type": "read_receipt", "data": {"message_id": root}})).await;
    assert_eq!(ann.recv_type("read_receipt").await["data"]["user_id"], "ben");
    ann.send_json(json!({"type": "direct_message", "data": {"content": "psst", "recipient_id": "ben"}})).await;
    assert_eq!(ben_personal.recv_type("new_direct_message").await["data"]["content"], "psst");

    eventually("both chat messages in the history", || async {
        let history = api(&node, "GET", "/api/v1/chats/c1/messages", API_KEY, None).await;
        history["messages"].as_array().is_some_and(|m| m.len() == 2)
    })
    .await;
    // Removing ben closes his chat socket (4004), as on a cluster.
    api(&node, "PUT", "/api/v1/chats/c1", API_KEY, Some(json!({"member_ids": ["ann"]}))).await;
    assert_eq!(ben.closed().await, 4004);
    node.shutdown().await;
}

#[tokio::test]
async fn the_pythia_flow_works_in_embedded_mode() {
    let dir = TempDir::new("embedded-pythia");
    let node = embedded(&dir, &["ann", "ben", "dan"]).await;
    let body = json!({"name": "General", "private": false, "member_ids": ["ann", "ben"]});
    api(&node, "PUT", "/api/v1/channels/general", API_KEY, Some(body)).await;
    let mut ann = Client::connect(&ws(&node, "/ws", "ann")).await;
    assert_eq!(ann.recv().await["type"], "connection_established");
    let mut ben = Client::connect(&ws(&node, "/ws", "ben")).await;
    assert_eq!(ben.recv().await["type"], "connection_established");
    assert_eq!(ann.recv_type("user_joined").await["user_id"], "ben");
    let mut dan = Client::connect(&ws(&node, "/ws", "dan")).await;
    assert_eq!(dan.recv().await["type"], "connection_established");
    dan.send_json(json!({"type": "join_channel", "channel_id": "general"})).await;
    assert_eq!(dan.recv_type("channel_joined").await["channel_id"], "general");
    ann.send_json(json!({"type": "get_online_users", "channel_id": "general"})).await;
    assert_eq!(ann.recv_type("online_users").await["users"], json!(["ann", "ben", "dan"]));

    let body = json!({"channel_id": "general", "content": "hi @ben"});
    let stored = api(&node, "POST", "/api/v1/messages/", &token("ann"), Some(body)).await;
    assert_eq!(ben.recv_type("new_message").await["data"], stored);
    assert_eq!(ben.recv_type("mention_notification").await["data"]["from_user_id"], "ann");
    let reaction = json!({"message_id": stored["id"], "emoji": "👍", "action": "add"});
    api(&node, "POST", "/api/v1/messages/reactions", &token("ben"), Some(reaction)).await;
    assert_eq!(ann.recv_type("message_reaction").await["data"]["emoji"], "👍");
    let history = api(&node, "GET", "/api/v1/channels/general/messages", &token("ann"), None).await;
    assert_eq!(history["messages"][0], stored);
    drop(dan);
    assert_eq!(ann.recv_type("user_left").await["user_id"], "dan");
    node.shutdown().await;
}

#[tokio::test]
async fn the_onetask_flow_works_in_embedded_mode() {
    let dir = TempDir::new("embedded-onetask");
    let node = embedded(&dir, &["ann", "ben"]).await;
    api(&node, "PUT", "/api/v1/workspaces/w1", API_KEY, Some(json!({"member_ids": ["ann", "ben"]}))).await;
    api(&node, "PUT", "/api/v1/focus-sessions/f1", API_KEY, Some(json!({"participant_ids": ["ann", "ben"]}))).await;
    let mut inbox = Client::connect(&ws(&node, "/ws/notifications", "ann")).await;
    let mut tasks = Client::connect(&ws(&node, "/ws/tasks/w1", "ben")).await;
    let mut focus = Client::connect(&ws(&node, "/ws/focus/f1", "ann")).await;
    assert_eq!(focus.recv().await["status"], "idle");

    let body = json!({"user_id": "ann", "title": "Hi", "content": "c", "notification_type": "system"});
    let posted = api(&node, "POST", "/api/v1/notifications", API_KEY, Some(body)).await;
    assert_eq!(inbox.recv_type("notification").await["notification_id"], posted["notification_id"]);
    let task = json!({"workspace_id": "w1", "task_id": 7, "title": "Ship", "action": "completed", "actor_id": "ann"});
    api(&node, "POST", "/api/v1/task-events", API_KEY, Some(task)).await;
    assert_eq!(tasks.recv_type("task_update").await["task_id"], 7);
    // The completed task is ann's first activity: her streak starts, from the in-process worker.
    assert_eq!(inbox.recv_type("streak_update").await["data"]["current_streak"], 1);

    focus.send_json(json!({"type": "focus_action", "action": "start", "duration_seconds": 60})).await;
    assert_eq!(focus.recv_type("focus_update").await["status"], "running");
    focus.send_json(json!({"type": "focus_action", "action": "complete"})).await;
    assert_eq!(focus.recv_type("focus_update").await["status"], "completed");
    node.shutdown().await;
}

/// Embedded mode SIGKILLed in the middle of a stream of messages: after a restart on the same
/// file, every message a client saw live is in the history, once.
#[tokio::test]
async fn embedded_mode_killed_mid_stream_loses_nothing_a_client_saw() {
    let dir = TempDir::new("embedded-kill");
    let exe = env!("CARGO_BIN_EXE_e2e-gateway");
    let roomy = [("GATEWAY_RATE_PER_SEC", "100000"), ("GATEWAY_RATE_BURST", "100000")];
    let (mut process, addr) = e2e::spawn_embedded_process(exe, dir.path(), &roomy).await;
    let url = |path: &str| format!("http://{addr}{path}");
    for user in ["alice", "bob"] {
        let (status, _) =
            http("PUT", &url(&format!("/api/v1/users/{user}")), Some(API_KEY), Some(json!({"username": user}))).await;
        assert_eq!(status, 200);
    }
    let session = uuid::Uuid::new_v4().to_string();
    let body = json!({"inviter_id": "alice", "invitee_id": "bob"});
    let (status, _) = http("PUT", &url(&format!("/api/v1/sessions/{session}")), Some(API_KEY), Some(body)).await;
    assert_eq!(status, 200);

    let ws = |user: &str| format!("ws://{addr}{}", session_path(&session, &token(user)));
    let mut alice = Client::connect(&ws("alice")).await;
    let mut bob = Client::connect(&ws("bob")).await;
    let sender = tokio::spawn(async move {
        for i in 0..100_000 {
            if !alice.try_send_json(json!({"type": "message", "content": format!("m{i}")})).await {
                return; // The process is gone.
            }
            if i % 50 == 0 {
                tokio::task::yield_now().await;
            }
        }
    });
    // What bob saw live, until the process dies under him. Alice never reads her own echoes, so
    // the node may close her (1013, a full outbox) before bob has seen 500: then kill it there.
    let mut seen = std::collections::HashSet::new();
    let mut sender = sender;
    while seen.len() < 500 {
        tokio::select! {
            frame = bob.recv() => {
                seen.insert(frame["message_id"].as_str().unwrap().to_owned());
            }
            _ = &mut sender => break,
        }
    }
    assert!(seen.len() >= 100, "bob saw the stream before the kill: {}", seen.len());
    process.kill();
    // And whatever was still on its way to him.
    while let Some(frame) = tokio::time::timeout(e2e::HANG_GUARD, bob.try_next()).await.expect("the socket hung") {
        if let Some(id) = frame["message_id"].as_str() {
            seen.insert(id.to_owned());
        }
    }
    sender.abort();

    let (_again, addr) = e2e::spawn_embedded_process(exe, dir.path(), &roomy).await;
    let history = || async {
        let path = format!("http://{addr}/api/v1/sessions/{session}/messages?limit=200");
        let mut ids = std::collections::HashSet::new();
        let mut before: Option<String> = None;
        loop {
            let page = match &before {
                Some(b) => format!("{path}&before={b}"),
                None => path.clone(),
            };
            let (_, body) = http("GET", &page, Some(API_KEY), None).await;
            let messages = body["messages"].as_array().cloned().unwrap_or_default();
            for m in &messages {
                assert!(ids.insert(m["message_id"].as_str().unwrap().to_owned()), "a message stored twice");
            }
            match messages.last() {
                Some(last) if messages.len() == 200 => before = Some(last["message_id"].as_str().unwrap().to_owned()),
                _ => return ids,
            }
        }
    };
    eventually("every message seen live is in the history", || async {
        let stored = history().await;
        seen.iter().all(|id| stored.contains(id))
    })
    .await;
}
