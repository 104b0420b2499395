//! The server API's publishing routes keep their word: with Redis down they answer 503 and leave
//! nothing stored; a POST retried with the same `Idempotency-Key` creates one row and one live
//! event, on whichever node the retry lands.

use e2e::{http, http_with, token, Client, Cluster, API_KEY};
use serde_json::{json, Value};
use shared::ids::{ChannelId, UserId};
use shared::store::{Page, Store};

async fn post(
    cluster: &Cluster,
    node: usize,
    path: &str,
    bearer: &str,
    key: Option<&str>,
    body: Value,
) -> (u16, String, Value) {
    let headers: Vec<(&str, &str)> = key.map(|k| ("Idempotency-Key", k)).into_iter().collect();
    http_with("POST", &cluster.node(node).http(path), Some(bearer), &headers, Some(body)).await
}

/// Every frame up to a marker published now: what the user has received, nothing in flight.
async fn received(cluster: &Cluster, client: &mut Client, group: &str) -> Vec<Value> {
    let marker = json!({"type": "marker", "id": uuid::Uuid::new_v4().to_string()});
    let (status, _) = http(
        "POST",
        &cluster.node(0).http("/api/v1/publish"),
        Some(API_KEY),
        Some(json!({"group": group, "event": marker})),
    )
    .await;
    assert_eq!(status, 202);
    let mut frames = Vec::new();
    loop {
        let frame = client.recv().await;
        if frame == marker {
            return frames;
        }
        frames.push(frame);
    }
}

#[tokio::test]
async fn with_redis_down_publishing_routes_answer_503_and_store_nothing() {
    let mut cluster = Cluster::start(1).await;
    for user in ["ann", "ben"] {
        cluster.user(user, None).await;
    }
    cluster.channel("general", "General", false, &["ann", "ben"]).await;
    let store = Store::connect(&cluster.db.url(), 1).await.unwrap();

    cluster.redis().kill();
    let notification = json!({"user_id": "ben", "title": "t", "content": "c", "notification_type": "system"});
    let (status, _, body) = post(&cluster, 0, "/api/v1/notifications", API_KEY, None, notification.clone()).await;
    assert_eq!((status, body["error"].as_str()), (503, Some("unavailable")), "{body}");
    let message = json!({"channel_id": "general", "content": "hello @ben"});
    let (status, _, _) = post(&cluster, 0, "/api/v1/messages/", &token("ann"), None, message.clone()).await;
    assert_eq!(status, 503);
    let task = json!({"workspace_id": 1, "task_id": 2, "title": "t", "action": "completed", "actor_id": "ann"});
    let (status, _, _) = post(&cluster, 0, "/api/v1/task-events", API_KEY, None, task).await;
    assert_eq!(status, 503);
    let (status, _, _) =
        post(&cluster, 0, "/api/v1/publish", API_KEY, None, json!({"group": "user:ben", "event": {"x": 1}})).await;
    assert_eq!(status, 503);

    let general = ChannelId::parse("general").unwrap();
    let page = Page { limit: 10, before: None };
    assert!(store.channel_messages(&general, page).await.unwrap().is_empty(), "no message left behind");
    assert_eq!(store.notification_count(&UserId::parse("ben").unwrap(), "notification").await.unwrap(), 0);

    // Back: the same requests go through.
    cluster.redis().start_again().await;
    let (status, _, _) = post(&cluster, 0, "/api/v1/notifications", API_KEY, None, notification).await;
    assert_eq!(status, 201);
    let (status, _, _) = post(&cluster, 0, "/api/v1/messages/", &token("ann"), None, message).await;
    assert_eq!(status, 201);
    assert_eq!(store.channel_messages(&general, page).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_retry_with_the_same_idempotency_key_creates_one_row_and_one_event() {
    let cluster = Cluster::start(2).await;
    for user in ["ann", "ben"] {
        cluster.user(user, None).await;
    }
    cluster.channel("general", "General", false, &["ann", "ben"]).await;
    let store = Store::connect(&cluster.db.url(), 1).await.unwrap();
    let mut inbox = Client::connect(&cluster.node(1).ws(&format!("/ws/notifications?token={}", token("ben")))).await;

    let notification = json!({"user_id": "ben", "title": "t", "content": "c", "notification_type": "system"});
    let (status, head, first) =
        post(&cluster, 0, "/api/v1/notifications", API_KEY, Some("n-1"), notification.clone()).await;
    assert_eq!(status, 201, "{first}");
    assert!(!head.to_ascii_lowercase().contains("idempotent-replayed"));
    // The retry lands on the other node.
    let (status, head, again) =
        post(&cluster, 1, "/api/v1/notifications", API_KEY, Some("n-1"), notification.clone()).await;
    assert_eq!((status, &again), (201, &first), "the first answer again");
    assert!(head.to_ascii_lowercase().contains("idempotent-replayed: true"), "{head}");
    let (status, _, other) = post(&cluster, 0, "/api/v1/notifications", API_KEY, Some("n-2"), notification).await;
    assert_eq!(status, 201);
    assert_ne!(other["notification_id"], first["notification_id"], "another key is another request");

    let frames = received(&cluster, &mut inbox, "user:ben").await;
    let ids: Vec<&Value> = frames.iter().map(|f| &f["notification_id"]).collect();
    assert_eq!(ids, [&first["notification_id"], &other["notification_id"]], "one live event per key");
    assert_eq!(store.notification_count(&UserId::parse("ben").unwrap(), "notification").await.unwrap(), 2);

    // A user's POST: keyed per user, so another user's same key is their own request.
    let mut pythia = Client::connect(&cluster.node(1).ws(&format!("/ws?token={}", token("ben")))).await;
    assert_eq!(pythia.recv().await["type"], "connection_established");
    let message = json!({"channel_id": "general", "content": "once"});
    let (_, _, posted) = post(&cluster, 0, "/api/v1/messages/", &token("ann"), Some("m-1"), message.clone()).await;
    let (_, _, replayed) = post(&cluster, 1, "/api/v1/messages", &token("ann"), Some("m-1"), message.clone()).await;
    assert_eq!(posted, replayed);
    let (status, _, bens) = post(&cluster, 0, "/api/v1/messages/", &token("ben"), Some("m-1"), message).await;
    assert_eq!(status, 201);
    assert_ne!(bens["id"], posted["id"]);
    let general = ChannelId::parse("general").unwrap();
    assert_eq!(store.channel_messages(&general, Page { limit: 10, before: None }).await.unwrap().len(), 2);
    let live: Vec<Value> = received(&cluster, &mut pythia, "channel:general")
        .await
        .into_iter()
        .filter(|f| f["type"] == "new_message")
        .map(|f| f["data"]["id"].clone())
        .collect();
    assert_eq!(live, [posted["id"].clone(), bens["id"].clone()]);

    let (status, _, body) = post(
        &cluster,
        0,
        "/api/v1/publish",
        API_KEY,
        Some(&"k".repeat(300)),
        json!({"group": "user:ben", "event": {}}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
}
