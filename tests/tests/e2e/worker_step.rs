//! The worker's one step, called directly: it applies what is in the stream and acks it, and
//! applying the same jobs again changes nothing.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use e2e::Cluster;
use shared::broker::Broker;
use shared::event::{Group, SessionMessage};
use shared::ids::{MessageId, SessionId, UserId};
use shared::jobs::Job;
use shared::store::{Page, Store};
use worker::{Step, Worker, WorkerSettings};

#[tokio::test]
async fn process_batch_persists_acks_and_is_idempotent() {
    let cluster = Cluster::start(0).await;
    let store = Store::connect(&cluster.db.url(), 2).await.unwrap();
    let session = SessionId::parse(&uuid::Uuid::new_v4().to_string()).unwrap();
    let (alice, bob) = (UserId::parse("alice").unwrap(), UserId::parse("bob").unwrap());
    store.upsert_session(&session, &alice, &bob).await.unwrap();

    let broker: Arc<dyn Broker> = Arc::new(cluster.broker());
    let jobs: Vec<Job> = (0..5)
        .map(|i| {
            Job::SessionMessage(SessionMessage {
                message_id: MessageId::new(),
                session_id: session,
                sender_id: alice.clone(),
                sender_name: "alice".into(),
                content: format!("m{i}"),
                created_at: shared::time::now(),
            })
        })
        .collect();
    for job in &jobs {
        broker.publish_and_enqueue(&Group::session(&session), Bytes::from_static(b"{}"), job.encode()).await.unwrap();
    }

    let settings = WorkerSettings {
        consumer: "step".into(),
        batch_size: 100,
        claim_idle: Duration::from_secs(60),
        block: Duration::from_millis(100),
        after_commit: None,
        after_award_publish: None,
    };
    let mut worker = Worker::new(broker.clone(), store.clone(), settings, worker::Rules::default_set());
    assert_eq!(worker.process_batch().await.unwrap(), Step::Processed(5));
    assert_eq!(worker.process_batch().await.unwrap(), Step::Idle, "acked jobs are not delivered again");

    let page = Page { limit: 100, before: None };
    assert_eq!(store.session_messages(&session, page).await.unwrap().len(), 5);
    // A redelivery (the same jobs again) changes nothing.
    let jobs: Vec<_> = jobs.into_iter().map(shared::jobs::StampedJob::from).collect();
    store.persist(&jobs, &worker::Gamification { rules: worker::Rules::default_set() }).await.unwrap();
    let messages = store.session_messages(&session, page).await.unwrap();
    assert_eq!(messages.len(), 5);
    let newest = messages.iter().map(|m| m.created_at).max().unwrap();
    assert_eq!(store.session(&session).await.unwrap().unwrap().last_message_at, Some(newest));
}
