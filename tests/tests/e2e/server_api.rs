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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    // The server may answer (and close) before the whole body is sent: that is the point.
    let _ = stream.write_all(body).await;
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
    let garbage: &[u8] = &[0xff, 0xfe, b'{', 0x00, 0x80];
    assert_eq!(raw_status(addr, head(garbage.len()), garbage).await, 400);
    let truncated = br#"{"user_id": "ann", "title": "#;
    assert_eq!(raw_status(addr, head(truncated.len()), truncated).await, 400);
}
