//! The durable path keeps up and never stalls: messages reach the history within seconds of
//! being delivered live (whatever the phase of the worker's blocking read), text the database
//! cannot store is refused at the edge, and a job the database refuses anyway is dead-lettered
//! while everything around it is persisted.

use std::time::Duration;

use bytes::Bytes;
use e2e::{eventually, http, session_path, token, within, Client, Cluster, API_KEY};
use serde_json::{json, Value};
use shared::broker::{JobQueue, PubSub};
use shared::event::{Group, SessionMessage};
use shared::ids::{MessageId, SessionId, UserId};
use shared::jobs::Job;

/// "Well within a second": far below the 15 s a stuck job waited for its reclaim, and a hundred
/// times a healthy worker's lag (bench/RESULTS.md).
const PERSIST_DEADLINE: Duration = Duration::from_secs(1);

fn contents(history: &[Value]) -> Vec<String> {
    history.iter().map(|m| m["content"].as_str().unwrap_or_default().to_owned()).collect()
}

/// The real worker binary (1 s blocking reads): each message, sent at a different phase of the
/// worker's wait, is in the history within the deadline.
#[tokio::test]
async fn each_message_is_persisted_within_seconds_of_being_delivered() {
    let cluster = Cluster::start(2).await;
    let _worker = cluster.spawn_worker_process(env!("CARGO_BIN_EXE_e2e-worker"), 15_000);
    cluster.user("alice", None).await;
    cluster.user("bob", None).await;
    let session = cluster.session("alice", "bob").await;
    let mut alice = Client::connect(&cluster.node(0).ws(&session_path(&session, &token("alice")))).await;
    let mut bob = Client::connect(&cluster.node(1).ws(&session_path(&session, &token("bob")))).await;
    for i in 0..8u64 {
        // Pacing, not an assertion: spreads the sends over the phases of a 1 s blocking read.
        tokio::time::sleep(Duration::from_millis(130 * i)).await;
        alice.send_json(json!({"type": "message", "content": format!("m{i}")})).await;
        assert_eq!(bob.recv().await["content"], format!("m{i}"));
        within(PERSIST_DEADLINE, &format!("m{i} in the history"), || async {
            contents(&cluster.history(&session).await).contains(&format!("m{i}"))
        })
        .await;
    }
}

/// NUL characters are refused with `invalid_payload` on the sockets and 400 on the server API;
/// the socket stays open and the next message goes through.
#[tokio::test]
async fn nul_characters_are_refused_at_the_edge() {
    let mut cluster = Cluster::start(2).await;
    cluster.start_worker().await;
    cluster.user("alice", None).await;
    cluster.user("bob", None).await;
    cluster.chat("c-nul", &["alice", "bob"]).await;
    let session = cluster.session("alice", "bob").await;

    let mut sess = Client::connect(&cluster.node(0).ws(&session_path(&session, &token("alice")))).await;
    sess.send_text(r#"{"type":"message","content":"bad\u0000text"}"#).await;
    let refused = sess.recv().await;
    assert_eq!((refused["type"].as_str(), refused["error_code"].as_str()), (Some("error"), Some("invalid_payload")));
    sess.send_json(json!({"type": "message", "content": "fine"})).await;
    assert_eq!(sess.recv().await["content"], "fine");

    let mut chat = Client::connect(&cluster.node(1).ws(&format!("/api/v1/ws/chat/c-nul?token={}", token("bob")))).await;
    chat.send_text(r#"{"type":"send_message","data":{"content":"x\u0000"}}"#).await;
    assert_eq!(chat.recv().await["error_code"], "invalid_payload");

    let (status, body) = http(
        "PUT",
        &cluster.node(1).http("/api/v1/users/carol"),
        Some(API_KEY),
        Some(json!({"username": "ca\u{0}rol"})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("NUL"), "{body}");
    let notification = json!({"user_id": "alice", "title": "t\u{0}", "content": "c", "notification_type": "system"});
    let (status, _) =
        http("POST", &cluster.node(0).http("/api/v1/notifications"), Some(API_KEY), Some(notification)).await;
    assert_eq!(status, 400);

    eventually("the good message persisted", || async { contents(&cluster.history(&session).await) == ["fine"] }).await;
}

fn session_job(session: &SessionId, content: &str) -> Job {
    Job::SessionMessage(SessionMessage {
        message_id: MessageId::new(),
        session_id: *session,
        sender_id: UserId::parse("alice").unwrap(),
        sender_name: "alice".into(),
        content: content.into(),
        created_at: shared::time::now(),
    })
}

/// A job the database refuses, put straight into the stream between good ones (as a gateway of
/// an older version could), goes to the dead-letter stream; the jobs before and after it are
/// persisted. `worker dead-letters` lists it, `--replay` sends it round again, and `/metrics`
/// counts it.
#[tokio::test]
async fn a_poison_job_is_dead_lettered_and_the_others_are_persisted() {
    let cluster = Cluster::start(2).await;
    let exe = env!("CARGO_BIN_EXE_e2e-worker");
    cluster.user("alice", None).await;
    cluster.user("bob", None).await;
    let session_text = cluster.session("alice", "bob").await;
    let session = SessionId::parse(&session_text).unwrap();
    let broker = cluster.broker();
    let group = Group::session(&session);
    for content in ["before-1", "before-2", "poison\u{0}", "after-1", "after-2"] {
        broker
            .publish_and_enqueue(&group, Bytes::from_static(b"{}"), session_job(&session, content).encode())
            .await
            .unwrap();
    }
    broker.enqueue(Bytes::from_static(b"not a job")).await.unwrap();
    // Started after the jobs, so that they arrive in one batch with the poison in the middle.
    let _worker = cluster.spawn_worker_process(exe, 15_000);

    eventually("the four good messages persisted", || async {
        let mut persisted = contents(&cluster.history(&session_text).await);
        persisted.sort();
        persisted == ["after-1", "after-2", "before-1", "before-2"]
    })
    .await;
    eventually("two dead letters", || async { broker.dead_letter_count().await.unwrap() == 2 }).await;
    assert_eq!(cluster.node(1).metric("jobs_dead_letters").await, 2);

    let (listing, ok) = cluster.worker_command(exe, &["dead-letters"]).await;
    assert!(ok, "{listing}");
    assert_eq!(listing.lines().count(), 2, "{listing}");
    let line =
        |needle: &str| listing.lines().find(|l| l.contains(needle)).unwrap_or_else(|| panic!("{needle}: {listing}"));
    assert!(line("poison\\u0000").contains("22021"), "the database's error is kept: {listing}");
    assert!(line("not a job").contains("undecodable"), "{listing}");

    // Replayed, the undecodable one goes round the stream again and comes back dead.
    let replayed = line("not a job").split('\t').next().unwrap();
    let (out, ok) = cluster.worker_command(exe, &["dead-letters", "--replay", replayed]).await;
    assert!(ok, "{out}");
    eventually("replayed, processed, dead again", || async {
        let letters = broker.dead_letters(10).await.unwrap();
        letters.len() == 2 && letters.iter().all(|l| l.id != replayed)
    })
    .await;
    let (out, ok) = cluster.worker_command(exe, &["dead-letters", "--replay", replayed]).await;
    assert!(!ok, "a dead letter replays once: {out}");

    // The worker kept going: a new message is persisted.
    let mut alice = Client::connect(&cluster.node(0).ws(&session_path(&session_text, &token("alice")))).await;
    alice.send_json(json!({"type": "message", "content": "later"})).await;
    within(PERSIST_DEADLINE, "a later message persisted", || async {
        contents(&cluster.history(&session_text).await).contains(&"later".to_owned())
    })
    .await;
}

/// The worker process serves its own `/metrics` and `/healthz` (`WORKER_METRICS_BIND`): what it
/// persisted shows there, with the publish-to-row lag histogram.
#[tokio::test]
async fn the_worker_serves_its_metrics_and_liveness() {
    let cluster = Cluster::start(1).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let bind = format!("127.0.0.1:{port}");
    let exe = env!("CARGO_BIN_EXE_e2e-worker");
    let _worker = cluster.spawn_worker_process_with(exe, 15_000, &[("WORKER_METRICS_BIND", bind.as_str())]);
    cluster.user("alice", None).await;
    cluster.user("bob", None).await;
    let session = cluster.session("alice", "bob").await;
    let mut alice = Client::connect(&cluster.node(0).ws(&session_path(&session, &token("alice")))).await;
    for i in 0..3 {
        alice.send_json(json!({"type": "message", "content": format!("counted {i}")})).await;
        alice.recv().await;
    }
    let metrics = format!("http://{bind}/metrics");
    eventually("the worker counts three persisted jobs", || {
        let (metrics, bind) = (metrics.clone(), bind.clone());
        async move {
            // The worker process may not be listening yet (a loaded machine starts it slowly).
            if tokio::net::TcpStream::connect(&bind).await.is_err() {
                return false;
            }
            let (status, body) = http("GET", &metrics, None, None).await;
            let text = body.as_str().unwrap_or_default().to_owned();
            status == 200
                && text.contains("worker_jobs_persisted_total 3")
                && text.contains("worker_publish_to_row_lag_seconds_count 3")
                && text.contains("worker_dead_letters_total 0")
        }
    })
    .await;
    assert_eq!(http("GET", &format!("http://{bind}/healthz"), None, None).await.0, 200);
}
