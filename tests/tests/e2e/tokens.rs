//! Safer tokens: a client may pass its JWT in `Sec-WebSocket-Protocol` (`bearer`, then the
//! token) instead of `?token=`, so that it stays out of URLs and proxy logs: the server answers
//! with the subprotocol `bearer` only, and the token appears nowhere in the node's own debug
//! log. A connected client may send `refresh_token` to extend its socket past the first token's
//! `exp`; a token of another user closes the socket with 4003.

use std::time::Duration;

use e2e::{session_path, token, Client, Cluster, TempDir, JWT_SECRET};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

#[tokio::test]
async fn a_token_in_the_subprotocol_works_and_never_reaches_a_log() {
    let cluster = Cluster::start(1).await;
    for user in ["tk-ann", "tk-bob"] {
        cluster.user(user, None).await;
    }
    let session = cluster.session("tk-ann", "tk-bob").await;
    let dir = TempDir::new("node-log");
    let log = dir.path().join("node.log");
    let (mut process, addr) = cluster.spawn_node_process_logging(env!("CARGO_BIN_EXE_e2e-gateway"), &log).await;

    let jwt = token("tk-ann");
    let mut request = format!("ws://{addr}/ws/sessions/{session}/").into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_str(&format!("bearer, {jwt}")).unwrap());
    let (ws, response) = tokio_tungstenite::connect_async(request).await.expect("the upgrade is accepted");
    assert_eq!(response.headers().get("sec-websocket-protocol").unwrap(), "bearer", "the answer names bearer only");
    let mut ann = Client::from_inner(ws);
    let mut bob = Client::connect(&cluster.node(0).ws(&session_path(&session, &token("tk-bob")))).await;

    ann.send_json(json!({"type": "message", "content": "from the subprotocol"})).await;
    let frame = bob.recv().await;
    assert_eq!((frame["type"].as_str(), frame["sender_id"].as_str()), (Some("message"), Some("tk-ann")), "{frame}");
    bob.send_json(json!({"type": "message", "content": "back"})).await;
    assert_eq!(ann.recv_type("message").await["content"], "from the subprotocol", "its own echo first");
    assert_eq!(ann.recv_type("message").await["content"], "back");
    drop(ann);
    process.kill();

    let written = std::fs::read_to_string(&log).unwrap();
    assert!(written.lines().count() > 3, "the node logged at debug level: {written}");
    let signature = jwt.rsplit('.').next().unwrap();
    assert!(!written.contains(signature), "the token is in the node's log:\n{written}");
}

#[tokio::test]
async fn a_refreshed_token_keeps_the_socket_open_past_the_first_tokens_expiry() {
    let cluster = Cluster::start(2).await;
    for user in ["rf-ann", "rf-bob"] {
        cluster.user(user, None).await;
    }
    let session = cluster.session("rf-ann", "rf-bob").await;
    let short = shared::auth::issue_hs256(JWT_SECRET, "rf-ann", 3);
    let mut refreshed = Client::connect(&cluster.node(0).ws(&session_path(&session, &short))).await;
    let mut unrefreshed = Client::connect(&cluster.node(0).ws(&session_path(&session, &short))).await;
    let mut bob = Client::connect(&cluster.node(1).ws(&session_path(&session, &token("rf-bob")))).await;

    refreshed.send_json(json!({"type": "refresh_token", "token": token("rf-ann")})).await;
    let answer = refreshed.recv().await;
    assert_eq!(answer["type"], "token_refreshed", "{answer}");
    assert!(answer["expires_at"].as_i64().unwrap() > chrono::Utc::now().timestamp() + 600, "{answer}");

    // Past the first token's exp: the socket that did not refresh is closed 4003, the other lives.
    assert_eq!(unrefreshed.closed().await, 4003);
    tokio::time::sleep(Duration::from_secs(1)).await;
    bob.send_json(json!({"type": "message", "content": "still there?"})).await;
    assert_eq!(refreshed.recv_type("message").await["content"], "still there?");

    // A token of someone else is not a refresh: the socket closes as with a bad token.
    refreshed.send_json(json!({"type": "refresh_token", "token": token("rf-bob")})).await;
    assert_eq!(refreshed.closed().await, 4003);
}
