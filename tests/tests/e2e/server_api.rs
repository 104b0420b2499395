//! The server API's answers to bad requests: JSON errors with a status that fits, naming the
//! problem (PROTOCOL.md "The server side").

use e2e::{http, token, Cluster, API_KEY};
use serde_json::json;

#[tokio::test]
async fn bad_requests_get_json_errors_that_name_the_problem() {
    let cluster = Cluster::start(1).await;
    let node = cluster.node(0);
    let put = |path: &str, key: Option<&'static str>, body: serde_json::Value| {
        let url = node.http(path);
        async move { http("PUT", &url, key, Some(body)).await }
    };

    let (status, body) = put("/api/v1/users/ann", None, json!({"username": "ann"})).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("unauthorized")));
    let (status, _) = put("/api/v1/users/ann", Some("wrong-key"), json!({"username": "ann"})).await;
    assert_eq!(status, 401);
    let (status, _) =
        http("PUT", &node.http("/api/v1/users/ann"), Some(&token("ann")), Some(json!({"username": "ann"}))).await;
    assert_eq!(status, 401, "a user's token is not the backend's key");

    let (status, body) = put("/api/v1/users/bad%20id", Some(API_KEY), json!({"username": "x"})).await;
    assert_eq!(status, 400);
    assert!(body["message"].as_str().unwrap().starts_with("id:"), "{body}");
    let (status, body) = put("/api/v1/users/ann", Some(API_KEY), json!({"username": 5})).await;
    assert_eq!(status, 422);
    assert!(body["message"].as_str().unwrap().contains("invalid type"), "{body}");
    let (status, body) = put("/api/v1/chats/c1", Some(API_KEY), json!({"member_ids": ["ok", "not ok"]})).await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = put("/api/v1/channels/general", Some(API_KEY), json!({"name": "", "private": false})).await;
    assert_eq!(status, 400);
    assert!(body["message"].as_str().unwrap().starts_with("name:"), "{body}");
    let (status, body) =
        put("/api/v1/sessions/not-a-uuid", Some(API_KEY), json!({"inviter_id": "a", "invitee_id": "b"})).await;
    assert_eq!(status, 400);
    assert!(body["message"].as_str().unwrap().contains("UUID"), "{body}");

    let unknown = uuid::Uuid::new_v4();
    let (status, body) = http("GET", &node.http(&format!("/api/v1/sessions/{unknown}")), Some(API_KEY), None).await;
    assert_eq!((status, body["message"].as_str()), (404, Some("session not found")));
    let (status, body) = http("GET", &node.http("/api/v1/channels/nope"), Some(API_KEY), None).await;
    assert_eq!((status, body["message"].as_str()), (404, Some("channel not found")));
    let (status, _) = http("PUT", &node.http("/api/v1/channels/nope/members/ann"), Some(API_KEY), None).await;
    assert_eq!(status, 404);
    let (status, _) = http("GET", &node.http("/api/v1/users/ghost"), Some(API_KEY), None).await;
    assert_eq!(status, 404);
}

/// Sends `head` and then `body` over a raw connection and returns the response's status.
pub(crate) async fn raw_status(addr: std::net::SocketAddr, head: String, body: &[u8]) -> u16 {
    raw_status_sending(addr, head, body, false).await
}

/// `raw_status`; with `whole`, sending the whole body must succeed (as for a client that sends
/// its request before it reads, like Python's `http.client`): a server that closes on unread
/// bytes resets the connection, and the client never sees the answer.
async fn raw_status_sending(addr: std::net::SocketAddr, head: String, body: &[u8], whole: bool) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    // The server may answer (and close) before the whole body is sent: that is the point.
    let sent = stream.write_all(body).await;
    assert!(!whole || sent.is_ok(), "sending the body failed: {sent:?}");
    let mut response = Vec::new();
    let read = tokio::time::timeout(e2e::HANG_GUARD, async {
        let mut chunk = [0u8; 1024];
        while !response.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => response.extend_from_slice(&chunk[..n]),
            }
        }
    });
    read.await.expect("no answer");
    let text = String::from_utf8_lossy(&response);
    text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status line: {text:?}"))
}

/// An oversize body is answered 413 before it is read; bytes that are not JSON 400; never a
/// reset connection or a 5xx.
#[tokio::test]
async fn oversize_and_garbage_bodies_get_413_and_400() {
    let cluster = Cluster::start(1).await;
    let addr = cluster.node(0).addr;
    let head = |length: usize| {
        format!(
            "POST /api/v1/notifications HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n\
             Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
        )
    };
    assert_eq!(raw_status(addr, head(10 * 1024 * 1024), &[b'{'; 1024]).await, 413);
    // The whole oversize body sent, as a client that does not wait does: the answer still
    // arrives, not a connection reset.
    for size in [3 * 1024 * 1024, 10 * 1024 * 1024] {
        let whole = |head: String, body: Vec<u8>| async move { raw_status_sending(addr, head, &body, true).await };
        assert_eq!(whole(head(size), vec![b' '; size]).await, 413, "a {size}-byte body sent whole");
        let keyed = head(size).replace("\r\n\r\n", "\r\nIdempotency-Key: k1\r\n\r\n");
        assert_eq!(whole(keyed, vec![b' '; size]).await, 413, "with an Idempotency-Key");
        let chunked = head(0).replace("Content-Length: 0", "Transfer-Encoding: chunked");
        let mut body = format!("{size:x}\r\n").into_bytes();
        body.extend(std::iter::repeat_n(b' ', size));
        body.extend_from_slice(b"\r\n0\r\n\r\n");
        assert_eq!(whole(chunked, body).await, 413, "a {size}-byte chunked body");
    }
    let garbage: &[u8] = &[0xff, 0xfe, b'{', 0x00, 0x80];
    assert_eq!(raw_status(addr, head(garbage.len()), garbage).await, 400);
    let truncated = br#"{"user_id": "ann", "title": "#;
    assert_eq!(raw_status(addr, head(truncated.len()), truncated).await, 400);
}

/// What the API would store or publish wrong is refused, naming the field: text over its
/// documented length (422), a user id another route takes (400), an event with a top-level name
/// the gateway writes into every frame (400); nothing of it is stored or published.
#[tokio::test]
async fn overlong_text_reserved_ids_and_reserved_event_fields_are_refused() {
    let cluster = Cluster::start(1).await;
    let node = cluster.node(0);
    let call = |method: &'static str, path: &str, body: serde_json::Value| {
        let url = node.http(path);
        async move { http(method, &url, Some(API_KEY), Some(body)).await }
    };

    let long = |n: usize| "x".repeat(n);
    for (field, max) in [("username", 150), ("email", 254), ("display_name", 150)] {
        let mut user = json!({"username": "ann"});
        user[field] = json!(long(max + 1));
        let (status, body) = call("PUT", "/api/v1/users/ann", user.clone()).await;
        assert_eq!(status, 422, "{field}: {body}");
        assert!(body["message"].as_str().unwrap().starts_with(&format!("{field}:")), "{body}");
        user[field] = json!(long(max));
        let (status, body) = call("PUT", "/api/v1/users/ann", user).await;
        assert_eq!(status, 200, "{field} at its limit: {body}");
    }
    let (status, body) =
        call("PUT", "/api/v1/users/ann", json!({"username": "ann", "email": long(1024 * 1024 - 64)})).await;
    assert_eq!(status, 422, "a 1 MB email: {body}");
    let (status, body) = call("GET", "/api/v1/users/ann", json!(null)).await;
    assert_eq!((status, &body["email"]), (200, &json!(null)), "the last good write stands: {body}");

    let notification = json!({"user_id": "ann", "title": long(201), "content": "c", "notification_type": "t"});
    let (status, body) = call("POST", "/api/v1/notifications", notification).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["message"].as_str().unwrap().starts_with("title:"), "{body}");
    let (status, body) = call("PUT", "/api/v1/channels/general", json!({"name": long(201)})).await;
    assert_eq!(status, 422, "{body}");

    let (status, body) = call("PUT", "/api/v1/users/status", json!({"username": "status"})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("reserved"), "{body}");
    let (status, _) = call("GET", "/api/v1/users/status", json!(null)).await;
    assert_eq!(status, 404, "not created");

    for name in ["seq", "resume"] {
        let mut event = json!({"type": "x"});
        event[name] = json!(5);
        let (status, body) = call("POST", "/api/v1/publish", json!({"group": "user:ann", "event": event})).await;
        assert_eq!(status, 400, "{name}: {body}");
        assert!(body["message"].as_str().unwrap().starts_with(&format!("event.{name}:")), "{body}");
    }
    let nested = json!({"group": "user:ann", "event": {"type": "x", "data": {"seq": 5}}});
    let (status, body) = call("POST", "/api/v1/publish", nested).await;
    assert_eq!(status, 202, "a nested seq is the app's own: {body}");
}
