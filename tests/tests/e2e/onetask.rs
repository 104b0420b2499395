//! OneTask (onetask.md) across two nodes: notifications, task updates, the shared focus timer,
//! and the publish API.

use e2e::{close_code_of, http, token, Client, Cluster, API_KEY};
use serde_json::{json, Value};

async fn api(cluster: &Cluster, method: &str, path: &str, body: Value) -> (u16, Value) {
    http(method, &cluster.node(1).http(path), Some(API_KEY), Some(body)).await
}

fn ws(cluster: &Cluster, node: usize, path: &str, user: &str) -> String {
    cluster.node(node).ws(&format!("{path}?token={}", token(user)))
}

#[tokio::test]
async fn notifications_are_persisted_with_integer_ids_and_delivered_in_the_guide_shape() {
    let cluster = Cluster::start(2).await;
    cluster.user("789", None).await;
    let mut socket = Client::connect(&ws(&cluster, 0, "/ws/notifications", "789")).await;

    let body = json!({
        "user_id": 789, "title": "Notification Title", "content": "Notification content",
        "notification_type": "task", "related_entity_type": "task", "related_entity_id": 456,
        "data": {"priority": "high"}
    });
    let (status, reply) = api(&cluster, "POST", "/api/v1/notifications", body).await;
    assert_eq!(status, 201, "{reply}");
    let id = reply["notification_id"].as_i64().expect("an integer id");
    let frame = socket.recv().await;
    let created_at = frame["created_at"].as_str().unwrap().to_owned();
    assert!(created_at.ends_with('Z'));
    assert_eq!(
        frame,
        json!({
            "type": "notification", "notification_id": id, "title": "Notification Title",
            "content": "Notification content", "notification_type": "task", "related_entity_type": "task",
            "related_entity_id": 456, "created_at": created_at, "data": {"priority": "high"}
        })
    );
    let (_, second) = api(
        &cluster,
        "POST",
        "/api/v1/notifications",
        json!({"user_id": "789", "title": "t", "content": "c", "notification_type": "system"}),
    )
    .await;
    assert!(second["notification_id"].as_i64().unwrap() > id);
    assert_eq!(socket.recv().await["data"], json!({}));

    let (status, error) = api(&cluster, "POST", "/api/v1/notifications", json!({"user_id": "789", "title": "t"})).await;
    assert_eq!(status, 422);
    assert!(error["message"].as_str().unwrap().contains("content"), "{error}");
}

#[tokio::test]
async fn task_updates_reach_the_workspace_members_with_ids_in_their_json_type() {
    let cluster = Cluster::start(2).await;
    for user in ["ann", "ben", "eve"] {
        cluster.user(user, None).await;
    }
    let (status, _) = api(&cluster, "PUT", "/api/v1/workspaces/456", json!({"member_ids": ["ann", "ben"]})).await;
    assert_eq!(status, 200);
    let mut ann = Client::connect(&ws(&cluster, 0, "/ws/tasks/456", "ann")).await;
    let mut ben = Client::connect(&ws(&cluster, 1, "/ws/tasks/456", "ben")).await;
    assert_eq!(close_code_of(&ws(&cluster, 0, "/ws/tasks/456", "eve")).await, 4004);
    assert_eq!(close_code_of(&ws(&cluster, 0, "/ws/tasks/999", "ann")).await, 4004);

    let event = json!({"workspace_id": 456, "task_id": 123, "title": "Task Title", "action": "completed", "actor_id": 789, "data": {"due": "friday"}});
    let (status, _) = api(&cluster, "POST", "/api/v1/task-events", event).await;
    assert_eq!(status, 202);
    let frame = ben.recv().await;
    assert_eq!(ann.recv().await, frame);
    let timestamp = frame["timestamp"].as_str().unwrap().to_owned();
    assert_eq!(
        frame,
        json!({"type": "task_update", "task_id": 123, "title": "Task Title", "action": "completed",
               "workspace_id": 456, "actor_id": 789, "timestamp": timestamp, "data": {"due": "friday"}})
    );
    let bad = json!({"workspace_id": 456, "task_id": 1, "title": "x", "action": "exploded", "actor_id": 1});
    let (status, error) = api(&cluster, "POST", "/api/v1/task-events", bad).await;
    assert_eq!(status, 400);
    assert!(error["message"].as_str().unwrap().contains("action"));
}

#[tokio::test]
async fn the_focus_timer_is_shared_across_nodes_and_late_joiners_get_its_state() {
    let cluster = Cluster::start(2).await;
    for user in ["ann", "ben", "cat", "eve"] {
        cluster.user(user, None).await;
    }
    api(&cluster, "PUT", "/api/v1/focus-sessions/f1", json!({"participant_ids": ["ann", "ben"]})).await;
    let mut ann = Client::connect(&ws(&cluster, 0, "/ws/focus/f1", "ann")).await;
    let state = ann.recv().await;
    assert_eq!(
        (
            state["type"].as_str(),
            state["action"].as_str(),
            state["status"].as_str(),
            state["remaining_seconds"].as_i64()
        ),
        (Some("focus_update"), Some("state"), Some("idle"), Some(0))
    );
    let mut ben = Client::connect(&ws(&cluster, 1, "/ws/focus/f1", "ben")).await;
    ben.recv().await;
    assert_eq!(close_code_of(&ws(&cluster, 0, "/ws/focus/f1", "eve")).await, 4004);

    ann.send_json(json!({"type": "focus_action", "action": "start", "duration_seconds": 1500})).await;
    let started = ben.recv().await;
    assert_eq!(ann.recv().await["action"], "start");
    assert_eq!(started["session_id"], "f1");
    assert_eq!(
        (started["action"].as_str(), started["actor_id"].as_str(), started["status"].as_str()),
        (Some("start"), Some("ann"), Some("running"))
    );
    let left = started["remaining_seconds"].as_i64().unwrap();
    assert!((1..=1500).contains(&left), "{left}");
    assert_eq!(started.as_object().unwrap().len(), 7);

    ben.send_json(json!({"type": "focus_action", "action": "pause"})).await;
    let paused = ann.recv().await;
    ben.recv().await;
    assert_eq!((paused["status"].as_str(), paused["actor_id"].as_str()), (Some("paused"), Some("ben")));
    // A participant added later joins and sees the paused timer as it is.
    api(&cluster, "PUT", "/api/v1/focus-sessions/f1", json!({"participant_ids": ["ann", "ben", "cat"]})).await;
    let mut cat = Client::connect(&ws(&cluster, 1, "/ws/focus/f1", "cat")).await;
    let seen = cat.recv().await;
    assert_eq!((seen["action"].as_str(), seen["status"].as_str()), (Some("state"), Some("paused")));
    assert_eq!(seen["remaining_seconds"], paused["remaining_seconds"], "a paused timer does not move");

    // Actions that do not apply are refused; the timer is unchanged.
    cat.send_json(json!({"type": "focus_action", "action": "pause"})).await;
    assert_eq!(cat.recv().await["error_code"], "invalid_payload");
    cat.send_json(json!({"type": "focus_action", "action": "resume"})).await;
    for client in [&mut ann, &mut ben, &mut cat] {
        let resumed = client.recv().await;
        assert_eq!((resumed["action"].as_str(), resumed["status"].as_str()), (Some("resume"), Some("running")));
    }
    ann.send_json(json!({"type": "focus_action", "action": "complete"})).await;
    let done = ben.recv().await;
    assert_eq!(
        (done["action"].as_str(), done["status"].as_str(), done["remaining_seconds"].as_i64()),
        (Some("complete"), Some("completed"), Some(0))
    );
}

#[tokio::test]
async fn the_publish_api_delivers_the_event_as_is() {
    let cluster = Cluster::start(2).await;
    cluster.user("ann", None).await;
    let mut ann = Client::connect(&ws(&cluster, 0, "/ws/notifications", "ann")).await;
    let event = json!({"type": "custom_event", "nested": {"a": [1, 2, 3]}, "ok": true});
    let (status, _) = api(&cluster, "POST", "/api/v1/publish", json!({"group": "user:ann", "event": event})).await;
    assert_eq!(status, 202);
    assert_eq!(ann.recv().await, event);
    for bad in [
        json!({"group": "everyone", "event": {}}),
        json!({"group": "user:ann", "event": [1]}),
        json!({"group": "planet:x", "event": {}}),
    ] {
        let (status, _) = api(&cluster, "POST", "/api/v1/publish", bad.clone()).await;
        assert_eq!(status, 400, "{bad}");
    }
}
