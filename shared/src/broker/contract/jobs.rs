//! The contract of `JobQueue`: jobs taken, claimed, acked and dead-lettered; a job stamped with its publication's position.

use std::time::Duration;

use bytes::Bytes;

use super::{decoded, group, next_message, raw, NodeFactory};
use crate::broker::JobQueue;
use crate::jobs::StampedJob;

/// Every case of this suite, each on a fresh bus from `make`.
pub async fn run_all<F: NodeFactory>(make: &impl Fn() -> F) {
    a_blocking_read_waits_its_whole_block(&make()).await;
    a_dead_workers_jobs_are_taken_at_once(&make()).await;
    dead_letters_leave_the_jobs_stream_and_replay_back(&make()).await;
    enqueue_appends_a_job_without_publishing(&make()).await;
    a_job_carries_the_position_of_its_publication(&make()).await;
    pending_jobs_are_claimed_and_acked_jobs_are_not(&make()).await;
    read_jobs_returns_empty_when_idle(&make()).await;
}

/// A worker whose heartbeat ran out is listed by the next beat of another, which takes its
/// pending jobs at once (they were idle for no time at all), and forgets it once nothing is
/// left; a worker that stopped cleanly is listed at once.
pub async fn a_dead_workers_jobs_are_taken_at_once(f: &impl NodeFactory) {
    let (a, _a_in) = f.node().await;
    let (b, _b_in) = f.node().await;
    let expiry = Duration::from_millis(300);
    a.worker_beat("doomed", expiry).await.unwrap();
    let dead = b.worker_beat("survivor", Duration::from_secs(10)).await.unwrap();
    assert!(dead.is_empty(), "nobody is dead yet: {dead:?}");
    b.enqueue(Bytes::from_static(b"held-job")).await.unwrap();
    let held = a.read_jobs("doomed", 10, Duration::from_millis(500)).await.unwrap();
    assert_eq!(held.len(), 1);
    tokio::time::sleep(expiry + Duration::from_millis(100)).await;
    let dead = b.worker_beat("survivor", Duration::from_secs(10)).await.unwrap();
    assert_eq!(dead.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>(), vec!["doomed"]);
    let names = vec!["doomed".to_owned()];
    let taken = b.claim_jobs_of("survivor", &names, &names, 10).await.unwrap();
    assert_eq!(taken.iter().map(|j| j.payload.clone()).collect::<Vec<_>>(), vec![Bytes::from_static(b"held-job")]);
    assert!(b.claim_jobs_of("other", &names, &[], 10).await.unwrap().is_empty(), "taken once");
    b.ack_jobs(&[taken[0].id.clone()]).await.unwrap();
    let dead = b.worker_beat("survivor", Duration::from_secs(10)).await.unwrap();
    assert!(dead.is_empty(), "the dead worker is forgotten: {dead:?}");
    b.worker_beat("survivor", Duration::ZERO).await.unwrap();
    let dead = a.worker_beat("next", Duration::from_secs(10)).await.unwrap();
    assert_eq!(dead.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>(), vec!["survivor"], "a clean stop");
}

/// A read blocked longer than a client library's default response timeout (500 ms) is still
/// waiting, not failed, and returns the job that arrives in its second half.
pub async fn a_blocking_read_waits_its_whole_block(f: &impl NodeFactory) {
    let (a, _a_in) = f.node().await;
    let (b, _b_in) = f.node().await;
    let reader = tokio::spawn(async move { a.read_jobs("c", 10, Duration::from_millis(2500)).await });
    tokio::time::sleep(Duration::from_millis(800)).await;
    b.enqueue(Bytes::from_static(b"late-job")).await.unwrap();
    let jobs = reader.await.unwrap().expect("a blocking read is not an error");
    assert_eq!(jobs.iter().map(|j| j.payload.clone()).collect::<Vec<_>>(), vec![Bytes::from_static(b"late-job")]);
}

pub async fn dead_letters_leave_the_jobs_stream_and_replay_back(f: &impl NodeFactory) {
    let (a, _a_in) = f.node().await;
    a.enqueue(Bytes::from_static(b"poison")).await.unwrap();
    let taken = a.read_jobs("c", 10, Duration::from_millis(500)).await.unwrap();
    assert_eq!(taken.len(), 1);
    a.dead_letter(&taken[0], "refused by the database").await.unwrap();
    assert!(a.claim_stale_jobs("other", Duration::ZERO, 10).await.unwrap().is_empty(), "no longer pending");
    let dead = a.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(a.dead_letter_count().await.unwrap(), 1);
    assert_eq!(
        (dead[0].payload.clone(), dead[0].error.as_str()),
        (Bytes::from_static(b"poison"), "refused by the database")
    );
    assert_eq!(dead[0].job_id, taken[0].id);
    assert!(!a.replay_dead_letter("0-1").await.unwrap(), "an unknown id replays nothing");
    assert!(a.replay_dead_letter(&dead[0].id).await.unwrap());
    assert!(a.dead_letters(10).await.unwrap().is_empty());
    let again = a.read_jobs("c", 10, Duration::from_millis(500)).await.unwrap();
    assert_eq!(again.iter().map(|j| j.payload.clone()).collect::<Vec<_>>(), vec![Bytes::from_static(b"poison")]);
}

pub async fn enqueue_appends_a_job_without_publishing(f: &impl NodeFactory) {
    let (a, mut a_in) = f.node().await;
    a.subscribe(&[group("user:q")]).await.unwrap();
    a.enqueue(Bytes::from_static(b"quiet-job")).await.unwrap();
    a.publish(&group("user:q"), Bytes::from_static(b"loud")).await.unwrap();
    assert_eq!(next_message(&mut a_in).await.1, Bytes::from_static(b"loud"), "enqueue published nothing");
    let jobs = a.read_jobs("c", 10, Duration::from_millis(500)).await.unwrap();
    assert_eq!(jobs.iter().map(|j| j.payload.clone()).collect::<Vec<_>>(), vec![Bytes::from_static(b"quiet-job")]);
}

/// A job published with a publication is stamped with that publication's position (what the worker
/// stores a chat message with); a job alone is not stamped.
pub async fn a_job_carries_the_position_of_its_publication(f: &impl NodeFactory) {
    let (a, mut a_in) = f.node().await;
    let chat = group("chat:stamped");
    a.subscribe(std::slice::from_ref(&chat)).await.unwrap();
    let job = crate::jobs::Job::Activity(crate::jobs::Activity {
        id: "stamped-1".into(),
        user_id: crate::ids::UserId::parse("ann").unwrap(),
        activity: crate::jobs::ActivityKind::Message,
        at: crate::time::now(),
        ran_seconds: None,
    });
    a.publish_and_enqueue(&chat, raw(1), job.encode()).await.unwrap();
    a.enqueue(job.encode()).await.unwrap();
    let (_, payload) = next_message(&mut a_in).await;
    let published = decoded(&payload).0;
    let jobs = read_at_least(a.as_ref(), "c1", 2).await;
    let stamped: Vec<StampedJob> = jobs.iter().map(|j| StampedJob::decode(&j.payload).unwrap()).collect();
    // The two may sit in different streams (the job alone in its own bucket's): no order between them.
    assert_eq!(stamped.len(), 2);
    assert!(
        stamped.contains(&StampedJob { job: job.clone(), published: Some(published), traceparent: None }),
        "{stamped:?}"
    );
    assert!(stamped.contains(&StampedJob::from(job)), "{stamped:?}");
}

pub async fn pending_jobs_are_claimed_and_acked_jobs_are_not(f: &impl NodeFactory) {
    let (a, _a_in) = f.node().await;
    for i in 0..3 {
        a.publish_and_enqueue(&group("session:k"), Bytes::from_static(b"x"), Bytes::from(format!("job-{i}")))
            .await
            .unwrap();
    }
    let taken = a.read_jobs("dead", 10, Duration::from_millis(500)).await.unwrap();
    assert_eq!(taken.len(), 3);
    a.ack_jobs(&[taken[0].id.clone()]).await.unwrap();
    // "dead" never acks the other two: a live consumer takes them over.
    let claimed = a.claim_stale_jobs("live", Duration::ZERO, 10).await.unwrap();
    let payloads: Vec<_> = claimed.iter().map(|j| j.payload.clone()).collect();
    assert_eq!(payloads, vec![Bytes::from_static(b"job-1"), Bytes::from_static(b"job-2")]);
    a.ack_jobs(&claimed.iter().map(|j| j.id.clone()).collect::<Vec<_>>()).await.unwrap();
    assert!(a.claim_stale_jobs("live", Duration::ZERO, 10).await.unwrap().is_empty());
    // A job not idle long enough stays with its consumer.
    a.publish_and_enqueue(&group("session:k"), Bytes::from_static(b"x"), Bytes::from_static(b"job-3")).await.unwrap();
    assert_eq!(a.read_jobs("dead", 10, Duration::from_millis(500)).await.unwrap().len(), 1);
    assert!(a.claim_stale_jobs("live", Duration::from_secs(3600), 10).await.unwrap().is_empty());
}

/// Reads for `consumer` until at least `n` jobs came (a few reads: they may sit in several streams).
async fn read_at_least(q: &dyn JobQueue, consumer: &str, n: usize) -> Vec<crate::jobs::JobEntry> {
    let mut jobs = Vec::new();
    for _ in 0..20 {
        jobs.extend(q.read_jobs(consumer, 10, Duration::from_millis(500)).await.unwrap());
        if jobs.len() >= n {
            break;
        }
    }
    jobs
}

pub async fn read_jobs_returns_empty_when_idle(f: &impl NodeFactory) {
    let (a, _a_in) = f.node().await;
    assert!(a.read_jobs("c", 10, Duration::from_millis(20)).await.unwrap().is_empty());
}
