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
