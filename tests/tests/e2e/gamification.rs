//! Gamification (onetask.md, PROTOCOL.md "Gamification"): awards reach the user's notifications
//! socket on another node, are stored as notifications with integer ids, and happen exactly once.

use std::sync::Arc;

use e2e::{eventually, http, session_path, token, Client, Cluster, API_KEY};
use serde_json::{json, Value};
use shared::broker::Broker;
use shared::ids::UserId;
use shared::jobs::{Activity, ActivityKind, Job};
use shared::store::Store;

fn notifications(cluster: &Cluster, node: usize, user: &str) -> String {
    cluster.node(node).ws(&format!("/ws/notifications?token={}", token(user)))
}

/// Reads frames until one of type `last`; returns them all.
async fn until(client: &mut Client, last: &str) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        let frame = client.recv().await;
        let done = frame["type"] == last;
        frames.push(frame);
        if done {
            return frames;
        }
    }
}

/// Sends a marker through the publish API and returns every frame before it: what the user
/// received up to now, with nothing left in flight.
async fn drain(cluster: &Cluster, client: &mut Client, user: &str) -> Vec<Value> {
    let marker = json!({"type": "marker", "id": uuid::Uuid::new_v4().to_string()});
    let body = json!({"group": format!("user:{user}"), "event": marker});
    http("POST", &cluster.node(0).http("/api/v1/publish"), Some(API_KEY), Some(body)).await;
    let mut frames = until(client, "marker").await;
    frames.pop();
    frames
}

async fn store(cluster: &Cluster) -> Store {
    Store::connect(&cluster.db.url(), 2).await.unwrap()
}

fn uid(id: &str) -> UserId {
    UserId::parse(id).unwrap()
}

#[tokio::test]
async fn a_first_message_on_any_app_unlocks_first_message_on_the_notifications_socket() {
    let mut cluster = Cluster::start(2).await;
    cluster.start_worker().await;
    for user in ["sam", "chi", "pia", "bob"] {
        cluster.user(user, None).await;
    }
    let session = cluster.session("sam", "bob").await;
    cluster.chat("c1", &["chi", "bob"]).await;
    cluster.channel("general", "General", false, &["pia", "bob"]).await;
    let db = store(&cluster).await;

    for user in ["sam", "chi", "pia"] {
        // The user listens on node B; the message goes through node A.
        let mut inbox = Client::connect(&notifications(&cluster, 1, user)).await;
        match user {
            "sam" => {
                let mut ws = Client::connect(&cluster.node(0).ws(&session_path(&session, &token("sam")))).await;
                ws.send_json(json!({"type": "message", "content": "hi"})).await;
                ws.recv().await;
            }
            "chi" => {
                let path = format!("/api/v1/ws/chat/c1?token={}", token("chi"));
                let mut ws = Client::connect(&cluster.node(0).ws(&path)).await;
                ws.send_json(json!({"type": "send_message", "data": {"content": "hi"}})).await;
                ws.recv().await;
            }
            _ => {
                let body = json!({"channel_id": "general", "content": "hi"});
                let (status, _) =
                    http("POST", &cluster.node(0).http("/api/v1/messages/"), Some(&token("pia")), Some(body)).await;
                assert_eq!(status, 201);
            }
        }
        let frames = until(&mut inbox, "achievement_unlocked").await;
        let streak = frames.iter().find(|f| f["type"] == "streak_update").expect("a streak_update first");
        let unlocked = frames.last().unwrap();
        assert_eq!(streak["data"], json!({"current_streak": 1, "is_milestone": false}), "{user}");
        assert_eq!(streak["notification_type"], "streak");
        assert!(streak["notification_id"].is_i64());
        let created_at = unlocked["created_at"].as_str().unwrap().to_owned();
        assert_eq!(
            unlocked,
            &json!({
                "type": "achievement_unlocked",
                "notification_id": unlocked["notification_id"].as_i64().expect("an integer id"),
                "title": "Achievement Unlocked!",
                "content": "You've unlocked the 'First Message' achievement and earned 10 points!",
                "notification_type": "achievement",
                "related_entity_type": "achievement",
                "related_entity_id": 1,
                "created_at": created_at,
                "data": {
                    "achievement_id": 1, "achievement_name": "First Message",
                    "achievement_description": "Send your first chat message.", "points": 10,
                    "icon": "chat_bubble", "level": 1, "key": "first_message"
                }
            })
        );
        assert_eq!(db.notification_count(&uid(user), "achievement_unlocked").await.unwrap(), 1);
        assert_eq!(db.notification_count(&uid(user), "streak_update").await.unwrap(), 1);
    }
}

#[tokio::test]
async fn ten_completed_tasks_give_task_master_its_level_up_and_one_progress() {
    let mut cluster = Cluster::start(2).await;
    cluster.start_worker().await;
    cluster.user("tim", None).await;
    let mut inbox = Client::connect(&notifications(&cluster, 1, "tim")).await;
    let complete = |task: i64| {
        let body = json!({"workspace_id": "w1", "task_id": task, "title": format!("Task {task}"), "action": "completed", "actor_id": "tim"});
        let url = cluster.node(0).http("/api/v1/task-events");
        async move { assert_eq!(http("POST", &url, Some(API_KEY), Some(body)).await.0, 202) }
    };
    for task in 1..=10 {
        complete(task).await;
    }
    let frames = until(&mut inbox, "level_up").await;
    let kinds: Vec<&str> = frames.iter().map(|f| f["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["streak_update", "achievement_progress", "achievement_unlocked", "level_up"]);
    let progress = &frames[1];
    assert_eq!(progress["content"], "You're 50% of the way to unlocking 'Task Master'!");
    assert_eq!(progress["data"]["progress"], 0.5);
    assert_eq!(progress["data"]["progress_percent"], 50);
    assert_eq!(frames[2]["data"]["key"], "task_master");
    assert_eq!(frames[3]["data"], json!({"new_level": 2}));
    assert_eq!(frames[3]["content"], "Congratulations! You've reached level 2!");

    // Completing a task again earns nothing more. Task 11 comes after it in the stream: once it
    // is counted, the repeat has been processed too.
    complete(3).await;
    complete(11).await;
    let db = store(&cluster).await;
    eventually("task 11 is counted", || async { db.user_stats(&uid("tim")).await.unwrap().tasks_completed == 11 })
        .await;
    assert_eq!(
        db.user_stats(&uid("tim")).await.unwrap().points,
        160,
        "10 tasks, task_master, task 11; not task 3 twice"
    );
}

#[tokio::test]
async fn the_same_jobs_twice_and_a_worker_killed_between_commit_and_ack_change_nothing() {
    let cluster = Cluster::start(1).await;
    cluster.user("eve", None).await;
    let mut inbox = Client::connect(&notifications(&cluster, 0, "eve")).await;
    let db = store(&cluster).await;
    let broker: Arc<dyn Broker> = Arc::new(cluster.broker());
    // A job published twice (a duplicate publish) and two distinct ones.
    let activity = |id: &str| {
        Job::Activity(Activity {
            id: id.into(),
            user_id: uid("eve"),
            activity: ActivityKind::TaskCompleted,
            at: shared::time::now(),
            ran_seconds: None,
        })
        .encode()
    };
    for id in ["task:w:1", "task:w:1", "task:w:2", "task:w:2"] {
        broker.enqueue(activity(id)).await.unwrap();
    }
    // A worker process that commits its batch and is SIGKILLed before it acks.
    let exe = env!("CARGO_BIN_EXE_e2e-worker");
    let mut doomed = cluster.spawn_worker_process_with(exe, 200, &[("E2E_STALL_AFTER_COMMIT", "1")]);
    doomed.wait_for_line("committed").await;
    doomed.kill();
    let stats = db.user_stats(&uid("eve")).await.unwrap();
    assert_eq!((stats.tasks_completed, stats.points), (2, 20), "the commit happened, each duplicate counted once");

    // A new worker takes over the pending jobs (they are applied again: no change) and publishes
    // the awards the dead one stored but never published.
    let _worker = cluster.spawn_worker_process(exe, 200);
    let frames = until(&mut inbox, "streak_update").await;
    assert_eq!(frames.len(), 1);
    eventually("the pending jobs are claimed and acked", || async { cluster.pending_jobs().await == 0 }).await;
    // Exactly once: two tasks' points, one streak notification, and nothing more was published.
    let stats = db.user_stats(&uid("eve")).await.unwrap();
    assert_eq!((stats.tasks_completed, stats.points, stats.current_streak), (2, 20, 1));
    assert_eq!(db.notification_count(&uid("eve"), "streak_update").await.unwrap(), 1);
    assert!(drain(&cluster, &mut inbox, "eve").await.is_empty(), "no award was published twice");
}

/// A worker SIGKILLed after publishing an award and before marking it delivered: the user saw
/// it once; another worker publishes it again after the claim runs out, with the same
/// `notification_id`, and then never again. Nothing is lost at any point.
#[tokio::test]
async fn an_award_published_again_after_a_crash_carries_the_same_id() {
    let cluster = Cluster::start(2).await;
    cluster.user("ivy", None).await;
    cluster.user("max", None).await;
    let session = cluster.session("ivy", "max").await;
    let mut inbox = Client::connect(&notifications(&cluster, 1, "ivy")).await;
    let exe = env!("CARGO_BIN_EXE_e2e-worker");
    let mut doomed = cluster.spawn_worker_process_with(exe, 300, &[("E2E_STALL_AFTER_AWARD_PUBLISH", "1")]);

    let mut ivy = Client::connect(&cluster.node(0).ws(&session_path(&session, &token("ivy")))).await;
    ivy.send_json(json!({"type": "message", "content": "my first"})).await;
    doomed.wait_for_line("published").await;
    let first = until(&mut inbox, "achievement_unlocked").await;
    doomed.kill();
    let unlocked = first.last().unwrap().clone();
    let id = unlocked["notification_id"].as_i64().expect("an integer id");

    let _worker = cluster.spawn_worker_process(exe, 300);
    let again = until(&mut inbox, "achievement_unlocked").await;
    assert_eq!(again.last().unwrap(), &unlocked, "the same event, the same notification_id {id}");
    let db = store(&cluster).await;
    assert_eq!(db.notification_count(&uid("ivy"), "achievement_unlocked").await.unwrap(), 1, "stored once");
    // Marked delivered this time: then a marker arrives with nothing before it.
    let pool = sqlx::PgPool::connect(&cluster.db.url()).await.unwrap();
    eventually("every award marked delivered", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM notifications WHERE NOT delivered")
            .fetch_one(&pool)
            .await
            .unwrap()
            == 0
    })
    .await;
    let rest = drain(&cluster, &mut inbox, "ivy").await;
    assert!(rest.iter().all(|f| f["notification_id"] != id), "published a third time: {rest:?}");
}

/// Points cannot be farmed: a user posting as fast as they can through the messages API is held
/// to the sockets' rate (429 with `Retry-After`), and what gets through earns at most the rules'
/// message points cap; focus sessions started and completed back to back earn nothing (the
/// rules count one only after its minimum run). The points are what an honest user would earn.
#[tokio::test]
async fn points_cannot_be_farmed_by_message_floods_or_instant_focus_sessions() {
    let mut cluster = Cluster::start(2).await;
    cluster.start_worker().await;
    for user in ["fay", "gus"] {
        cluster.user(user, None).await;
    }
    cluster.channel("farm", "Farm", false, &["fay"]).await;
    let rules = worker::Rules::default_set();
    let cap = rules.message_points_cap.clone().expect("the default rules cap message points").points;

    let url = cluster.node(0).http("/api/v1/messages/");
    let (mut accepted, mut throttled) = (0i64, 0);
    for n in 0..150 {
        let body = json!({"channel_id": "farm", "content": format!("farm {n}")});
        let (status, head, reply) = e2e::http_with("POST", &url, Some(&token("fay")), &[], Some(body)).await;
        match status {
            201 => accepted += 1,
            429 => {
                throttled += 1;
                assert!(head.to_ascii_lowercase().contains("\r\nretry-after: "), "429 without Retry-After: {head}");
                assert_eq!(reply["error"], "rate_limited", "{reply}");
            }
            other => panic!("POST /api/v1/messages/ answered {other}: {reply}"),
        }
    }
    assert!(throttled > 0, "150 posts at once all went through");

    // Focus sessions started and completed at once, ten times.
    let (status, _) = http(
        "PUT",
        &cluster.node(0).http("/api/v1/focus-sessions/ff"),
        Some(API_KEY),
        Some(json!({"participant_ids": ["gus"]})),
    )
    .await;
    assert_eq!(status, 200);
    let mut focus = Client::connect(&cluster.node(1).ws(&format!("/ws/focus/ff?token={}", token("gus")))).await;
    focus.recv().await;
    for _ in 0..10 {
        focus.send_json(json!({"type": "focus_action", "action": "start", "duration_seconds": 1500})).await;
        assert_eq!(focus.recv_type("focus_update").await["status"], "running");
        focus.send_json(json!({"type": "focus_action", "action": "complete"})).await;
        assert_eq!(focus.recv_type("focus_update").await["status"], "completed");
    }
    // A completed task after them, as a marker: once it is scored, so are they.
    let task = json!({"workspace_id": "w-farm", "task_id": 1, "title": "t", "action": "completed", "actor_id": "gus"});
    let (status, _) = http("POST", &cluster.node(0).http("/api/v1/task-events"), Some(API_KEY), Some(task)).await;
    assert_eq!(status, 202);

    let db = store(&cluster).await;
    eventually("every accepted message scored", || async {
        db.user_stats(&uid("fay")).await.unwrap().messages == accepted
    })
    .await;
    let fay = db.user_stats(&uid("fay")).await.unwrap();
    let chatterbox = if accepted >= 100 { 50 } else { 0 };
    assert_eq!(fay.points, accepted.min(cap) + 10 + chatterbox, "capped message points plus first_message");
    eventually("the task scored", || async { db.user_stats(&uid("gus")).await.unwrap().tasks_completed == 1 }).await;
    let gus = db.user_stats(&uid("gus")).await.unwrap();
    assert_eq!((gus.focus_completed, gus.points), (0, 10), "instant focus sessions earn nothing");
}
