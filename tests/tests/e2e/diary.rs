//! The Diary personal socket (diary.md): ping, motivation, echo; who may open it.

use e2e::{close_code_of, token, Client, Cluster, Node};
use serde_json::json;

fn personal(user: &str, token: Option<&str>) -> String {
    match token {
        Some(t) => format!("/api/v1/ws/{user}?token={t}"),
        None => format!("/api/v1/ws/{user}"),
    }
}

#[tokio::test]
async fn the_guide_flows_with_a_token() {
    let cluster = Cluster::start(1).await;
    cluster.user("123456789", None).await;
    let mut ws = Client::connect(&cluster.node(0).ws(&personal("123456789", Some(&token("123456789"))))).await;

    ws.send_json(json!({"type": "ping"})).await;
    assert_eq!(ws.recv().await, json!({"type": "pong", "user_id": "123456789", "message": "Pong!"}));

    ws.send_json(json!({"type": "motivation_requested", "current_challenge": "Working on a difficult feature", "stress_level": 7})).await;
    let m = ws.recv().await;
    assert_eq!(m["type"], "motivation_generated");
    assert_eq!(m["user_id"], "123456789");
    assert_eq!(m["current_challenge"], "Working on a difficult feature");
    assert_eq!(m["stress_level"], 7);
    let text = m["motivation_text"].as_str().unwrap();
    assert!(text.contains("Working on a difficult feature"), "{text}");
    assert!(text.chars().any(|c| c as u32 >= 0x1F000), "a real emoji, not mojibake: {text}");
    assert_eq!(m.as_object().unwrap().len(), 5);

    ws.send_json(json!({"type": "motivation_requested"})).await;
    let m = ws.recv().await;
    assert_eq!((m["stress_level"].as_u64(), m["current_challenge"].as_str()), (Some(5), Some("")));

    // The echo carries the frame's text exactly as sent, spacing included.
    let raw = r#"{"type": "custom_message", "data": "Any custom data"}"#;
    ws.send_text(raw).await;
    assert_eq!(ws.recv().await, json!({"type": "echo", "user_id": "123456789", "message": format!("Received: {raw}")}));
    ws.send_text(r#"{"data": "no type"}"#).await;
    assert_eq!(ws.recv().await["message"], r#"Received: {"data": "no type"}"#);
}

#[tokio::test]
async fn bad_diary_frames_get_errors_and_the_socket_stays_open() {
    let cluster = Cluster::start(1).await;
    cluster.user("dana", None).await;
    let mut ws = Client::connect(&cluster.node(0).ws(&personal("dana", Some(&token("dana"))))).await;
    for (frame, code) in [
        ("{not json".to_owned(), "invalid_json"),
        (json!({"type": "motivation_requested", "stress_level": 11}).to_string(), "invalid_payload"),
        (json!({"type": "motivation_requested", "stress_level": 0}).to_string(), "invalid_payload"),
        (json!({"type": "motivation_requested", "current_challenge": "x".repeat(501)}).to_string(), "invalid_payload"),
    ] {
        ws.send_text(&frame).await;
        let error = ws.recv().await;
        assert_eq!((error["type"].as_str(), error["error_code"].as_str()), (Some("error"), Some(code)), "{frame}");
    }
    ws.send_json(json!({"type": "ping"})).await;
    assert_eq!(ws.recv().await["type"], "pong");
}

#[tokio::test]
async fn the_token_must_be_the_path_users() {
    let cluster = Cluster::start(1).await;
    cluster.user("dana", None).await;
    cluster.user("erin", None).await;
    let node = cluster.node(0);
    assert_eq!(close_code_of(&node.ws(&personal("dana", None))).await, 4001, "tokens are required by default");
    assert_eq!(close_code_of(&node.ws(&personal("dana", Some(&token("erin"))))).await, 4004);
    assert_eq!(close_code_of(&node.ws(&personal("dana", Some("forged")))).await, 4003);
    assert_eq!(close_code_of(&node.ws(&personal("ghost", Some(&token("ghost"))))).await, 4002);
}

#[tokio::test]
async fn anonymous_mode_serves_the_guide_but_no_private_data() {
    let cluster = Cluster::start(0).await;
    let mut config = cluster.node_config();
    config.anonymous_personal = true;
    let node = Node::start(config).await;
    let mut ws = Client::connect(&node.ws(&personal("123456789", None))).await;
    ws.send_json(json!({"type": "ping"})).await;
    assert_eq!(ws.recv().await["user_id"], "123456789");
    // A token that is present is still checked.
    assert_eq!(close_code_of(&node.ws(&personal("123456789", Some("forged")))).await, 4003);
    // Tokenless sockets are not "connected users".
    let (_, status) = e2e::http("GET", &node.http("/api/v1/ws/status"), None, None).await;
    assert_eq!(status, json!({"connected_users": 0, "status": "active"}));
}

/// The Python client class of diary.md, unchanged, in the guide's tokenless mode.
#[tokio::test]
async fn the_guides_python_client_works_unchanged() {
    let cluster = Cluster::start(0).await;
    let mut config = cluster.node_config();
    config.anonymous_personal = true;
    let node = Node::start(config).await;
    let python = std::env::var("GATEWAY_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures");
    let output = tokio::process::Command::new(&python)
        .arg("-B")
        .arg(format!("{fixtures}/run_diary_client.py"))
        .arg(format!("ws://{}", node.addr))
        .current_dir(fixtures)
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!("cannot run {python} ({e}): install the Debian package python3-websockets, or run scripts/test")
        });
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the client failed (is python3-websockets installed?): {stderr}");
    // The guide's class prints its own lines; the runner's JSON is the last one.
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("Connected to WebSocket for user 123456789"), "{stdout}");
    let last = stdout.lines().last().unwrap_or_default();
    let received: serde_json::Value = serde_json::from_str(last).expect("the runner prints JSON");
    assert_eq!(received["pong"], json!({"type": "pong", "user_id": "123456789", "message": "Pong!"}));
    let motivation = &received["motivation_generated"];
    assert_eq!(
        (motivation["stress_level"].as_u64(), motivation["current_challenge"].as_str()),
        (Some(7), Some("Working on integration"))
    );
    assert!(motivation["motivation_text"].as_str().unwrap().contains("Working on integration"));
    assert_eq!(
        received["echo"]["message"], r#"Received: {"type": "custom_message", "data": "Hello from client!"}"#,
        "Python's json.dumps spacing, echoed exactly"
    );
}
