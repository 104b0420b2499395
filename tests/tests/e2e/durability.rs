//! Nothing lost, nothing twice: history, `last_message_at`, and a worker SIGKILLed mid-stream.

use std::collections::HashSet;

use e2e::{eventually, http, session_path, token, Client, Cluster, API_KEY};
use serde_json::{json, Value};
use shared::config::Limits;

/// Limits that let a test send a few hundred frames quickly.
fn roomy() -> Limits {
    Limits { rate_per_sec: 10_000.0, rate_burst: 10_000.0, ..Limits::default() }
}

async fn session_row(cluster: &Cluster, session: &str) -> Value {
    let (status, body) =
        http("GET", &cluster.node(1).http(&format!("/api/v1/sessions/{session}")), Some(API_KEY), None).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Every accepted message is in the history exactly once, newest first, shaped like the live
/// frame; `last_message_at` is the newest message's `created_at`.
#[tokio::test]
async fn history_has_every_message_once_and_last_message_at_matches() {
    let mut cluster = Cluster::start_with(2, roomy()).await;
    cluster.start_worker().await;
    cluster.user("alice", None).await;
    cluster.user("bob", None).await;
    let session = cluster.session("alice", "bob").await;
    assert_eq!(session_row(&cluster, &session).await["last_message_at"], Value::Null);

    let mut alice = Client::connect(&cluster.node(0).ws(&session_path(&session, &token("alice")))).await;
    let mut bob = Client::connect(&cluster.node(1).ws(&session_path(&session, &token("bob")))).await;
    let mut live = Vec::new();
    for i in 0..40 {
        let (sender, name) = if i % 2 == 0 { (&mut alice, "alice") } else { (&mut bob, "bob") };
        sender.send_json(json!({"type": "message", "content": format!("{name} {i}")})).await;
    }
    for _ in 0..40 {
        live.push(alice.recv().await);
    }

    eventually("40 messages persisted", || async { cluster.history(&session).await.len() >= 40 }).await;
    let history = cluster.history(&session).await;
    assert_eq!(history.len(), 40);
    let ids: HashSet<_> = history.iter().map(|m| m["message_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids.len(), 40, "no duplicates");
    // Newest first; each item equals the frame delivered live.
    let mut oldest_first = history.clone();
    oldest_first.reverse();
    let mut live_sorted = live.clone();
    live_sorted.sort_by(|a, b| {
        (a["created_at"].as_str(), a["message_id"].as_str()).cmp(&(b["created_at"].as_str(), b["message_id"].as_str()))
    });
    assert_eq!(oldest_first, live_sorted);

    let newest = history[0]["created_at"].as_str().unwrap().to_owned();
    eventually("last_message_at is the newest message's", || async {
        session_row(&cluster, &session).await["last_message_at"] == newest.as_str()
    })
    .await;

    // Paging: `before` a message id gives the older ones.
    let url = cluster.node(0).http(&format!(
        "/api/v1/sessions/{session}/messages?limit=5&before={}",
        history[9]["message_id"].as_str().unwrap()
    ));
    let (status, page) = http("GET", &url, Some(API_KEY), None).await;
    assert_eq!(status, 200);
    assert_eq!(page["messages"].as_array().unwrap(), &history[10..15].to_vec());
}

/// The worker is SIGKILLed in the middle of a stream of messages; a new worker takes over the
/// jobs it left pending. Every message ends up persisted exactly once.
#[tokio::test]
async fn a_worker_killed_mid_stream_loses_nothing_and_duplicates_nothing() {
    let cluster = Cluster::start_with(2, roomy()).await;
    let exe = env!("CARGO_BIN_EXE_e2e-worker");
    cluster.user("alice", None).await;
    cluster.user("bob", None).await;
    let session = cluster.session("alice", "bob").await;
    let mut alice = Client::connect(&cluster.node(0).ws(&session_path(&session, &token("alice")))).await;
    let mut bob = Client::connect(&cluster.node(1).ws(&session_path(&session, &token("bob")))).await;

    let mut first = cluster.spawn_worker_process(exe, 500);
    let total = 300;
    for i in 0..total {
        let sender = if i % 2 == 0 { &mut alice } else { &mut bob };
        sender.send_json(json!({"type": "message", "content": format!("m{i}")})).await;
        if i == total / 2 {
            // Kill it once it has persisted something, while the stream is still going.
            eventually("the first worker persisted some messages", || async {
                !cluster.history(&session).await.is_empty()
            })
            .await;
            first.kill();
        }
    }
    for _ in 0..total {
        alice.recv().await;
    }
    let mut second = cluster.spawn_worker_process(exe, 500);
    eventually("every message persisted", || async {
        let url = cluster.node(0).http(&format!("/api/v1/sessions/{session}/messages?limit=200"));
        let count = |v: Value| v["messages"].as_array().map(Vec::len).unwrap_or(0);
        // Two pages of at most 200 cover the 300 messages.
        let (_, newest) = http("GET", &url, Some(API_KEY), None).await;
        let n = count(newest.clone());
        if n < 200 {
            return false;
        }
        let last = newest["messages"][199]["message_id"].as_str().unwrap().to_owned();
        let (_, older) = http("GET", &format!("{url}&before={last}"), Some(API_KEY), None).await;
        n + count(older) >= total
    })
    .await;
    second.kill();

    let mut contents = Vec::new();
    let mut before = String::new();
    loop {
        let url = cluster.node(0).http(&format!("/api/v1/sessions/{session}/messages?limit=200{before}"));
        let (_, page) = http("GET", &url, Some(API_KEY), None).await;
        let items = page["messages"].as_array().unwrap().clone();
        if items.is_empty() {
            break;
        }
        before = format!("&before={}", items.last().unwrap()["message_id"].as_str().unwrap());
        contents.extend(items.iter().map(|m| m["content"].as_str().unwrap().to_owned()));
    }
    assert_eq!(contents.len(), total, "exactly once");
    let distinct: HashSet<_> = contents.iter().collect();
    assert_eq!(distinct.len(), total);
    for i in 0..total {
        assert!(distinct.contains(&format!("m{i}")), "m{i} lost");
    }
}
