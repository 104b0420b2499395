//! The contract every `Broker` implementation passes. Run by `memory`'s unit tests and, against a
//! real Redis server, by the end-to-end suite. Each case gets a fresh bus (a new memory bus, or a
//! new key prefix on Redis) from the factory.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::{Broker, Inbound};
use crate::config::GroupWindow;
use crate::event::{Envelope, Event, Group, Position};
use crate::jobs::StampedJob;

/// Makes nodes attached to one shared bus.
#[async_trait]
pub trait NodeFactory: Send + Sync {
    async fn node(&self) -> (Arc<dyn Broker>, mpsc::Receiver<Inbound>);
}

/// Guards against a hang, not a timing assertion: a case that waits this long has failed.
const HANG_GUARD: Duration = Duration::from_secs(10);

async fn next_message(inbox: &mut mpsc::Receiver<Inbound>) -> (Group, Bytes) {
    loop {
        let inbound = tokio::time::timeout(HANG_GUARD, inbox.recv())
            .await
            .expect("no publication arrived")
            .expect("inbox closed");
        if let Inbound::Message { group, payload } = inbound {
            return (group, payload);
        }
    }
}

fn group(name: &str) -> Group {
    Group::from_name(name)
}

/// Runs every case, each on a fresh bus from `make`.
pub async fn run_all<F: NodeFactory>(make: impl Fn() -> F) {
    delivers_to_subscribed_nodes_only(&make()).await;
    unsubscribe_stops_delivery(&make()).await;
    keeps_publication_order(&make()).await;
    publish_and_enqueue_delivers_live_and_durably(&make()).await;
    pending_jobs_are_claimed_and_acked_jobs_are_not(&make()).await;
    read_jobs_returns_empty_when_idle(&make()).await;
    enqueue_appends_a_job_without_publishing(&make()).await;
    a_blocking_read_waits_its_whole_block(&make()).await;
    dead_letters_leave_the_jobs_stream_and_replay_back(&make()).await;
    publish_all_reaches_every_group_and_the_stream(&make()).await;
    publications_are_numbered_per_group_and_kept_in_its_window(&make()).await;
    a_trimmed_window_is_reported_incomplete(&make()).await;
    a_send_made_once_is_published_once_and_answered_with_the_first(&make()).await;
    a_job_carries_the_position_of_its_publication(&make()).await;
}

fn raw(n: u64) -> Bytes {
    Envelope::to_all(Event::Raw { event: serde_json::json!({ "n": n }) }).encode()
}

fn decoded(payload: &Bytes) -> (Position, u64) {
    let envelope = Envelope::decode(payload).expect("a stamped envelope is still an envelope");
    let Event::Raw { event } = &envelope.event else { panic!("not the raw event published") };
    (envelope.position().expect("stamped"), event["n"].as_u64().unwrap())
}

pub async fn publications_are_numbered_per_group_and_kept_in_its_window(f: &impl NodeFactory) {
    let (a, mut a_in) = f.node().await;
    let (b, _b_in) = f.node().await;
    let (one, two) = (group("chat:seq-one"), group("chat:seq-two"));
    assert_eq!(a.positions(std::slice::from_ref(&one)).await.unwrap(), vec![Position::default()], "no counter yet");
    a.subscribe(&[one.clone(), two.clone()]).await.unwrap();
    for n in 1..=3 {
        b.publish(&one, raw(n)).await.unwrap();
    }
    b.publish_all(&[(two.clone(), raw(10)), (one.clone(), raw(4))], &[]).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..5 {
        let (g, payload) = next_message(&mut a_in).await;
        let (position, n) = decoded(&payload);
        // Numbered from the counter's start (its creation time in ms), one by one.
        seen.push((g, position.seq - Position::counter_start(position.epoch), n));
        assert!(position.epoch > 0);
    }
    let expected = [(&one, 1, 1), (&one, 2, 2), (&one, 3, 3), (&two, 1, 10), (&one, 4, 4)];
    assert_eq!(seen, expected.map(|(g, seq, n)| (g.clone(), seq, n)));
    let at = b.positions(&[one.clone(), two.clone()]).await.unwrap();
    let start = |p: Position| Position::counter_start(p.epoch);
    assert_eq!((at[0].seq - start(at[0]), at[1].seq - start(at[1])), (4, 1));
    // After the second: the third and fourth, complete. From nothing (another epoch): all four, complete.
    let after_second = Position { seq: start(at[0]) + 2, ..at[0] };
    let reads = b.window_since(&[(one.clone(), after_second), (one.clone(), Position::default())]).await.unwrap();
    assert!(reads[0].complete && reads[1].complete);
    assert_eq!(reads[0].entries.iter().map(|p| decoded(p).1).collect::<Vec<_>>(), vec![3, 4]);
    assert_eq!(reads[1].entries.iter().map(|p| decoded(p).1).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    // Up to date: nothing, complete.
    let read = &b.window_since(&[(one.clone(), at[0])]).await.unwrap()[0];
    assert!(read.complete && read.entries.is_empty());
}

pub async fn a_trimmed_window_is_reported_incomplete(f: &impl NodeFactory) {
    let (a, _a_in) = f.node().await;
    let long = group("chat:seq-long");
    let publications = (1..=700).map(|n| (long.clone(), raw(n))).collect::<Vec<_>>();
    for chunk in publications.chunks(100) {
        a.publish_all(chunk, &[]).await.unwrap();
    }
    let at = a.positions(std::slice::from_ref(&long)).await.unwrap()[0];
    let start = Position::counter_start(at.epoch);
    assert_eq!(at.seq, start + 700);
    let read = &a.window_since(&[(long.clone(), Position { seq: start + 1, ..at })]).await.unwrap()[0];
    assert!(!read.complete, "seq 2 is long gone from a window of {}", GroupWindow::default().len);
    let kept: Vec<u64> = read.entries.iter().map(|p| decoded(p).0.seq).collect();
    assert!(kept.len() >= GroupWindow::default().len, "the window keeps at least its length");
    assert_eq!(kept, (kept[0]..=start + 700).collect::<Vec<_>>(), "what is kept is the latest, in order");
}

pub async fn publish_all_reaches_every_group_and_the_stream(f: &impl NodeFactory) {
    let (a, mut a_in) = f.node().await;
    let (b, _b_in) = f.node().await;
    a.subscribe(&[group("user:m1"), group("user:m2")]).await.unwrap();
    let publications = [(group("user:m1"), Bytes::from_static(b"one")), (group("user:m2"), Bytes::from_static(b"two"))];
    b.publish_all(&publications, &[Bytes::from_static(b"j1"), Bytes::from_static(b"j2")]).await.unwrap();
    assert_eq!(next_message(&mut a_in).await, (group("user:m1"), Bytes::from_static(b"one")));
    assert_eq!(next_message(&mut a_in).await, (group("user:m2"), Bytes::from_static(b"two")));
    let jobs = a.read_jobs("c", 10, Duration::from_millis(500)).await.unwrap();
    let payloads: Vec<_> = jobs.iter().map(|j| j.payload.clone()).collect();
    assert_eq!(payloads, vec![Bytes::from_static(b"j1"), Bytes::from_static(b"j2")]);
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

pub async fn delivers_to_subscribed_nodes_only(f: &impl NodeFactory) {
    let (a, mut a_in) = f.node().await;
    let (b, mut b_in) = f.node().await;
    a.subscribe(&[group("session:1")]).await.unwrap();
    b.subscribe(&[group("session:2")]).await.unwrap();
    b.publish(&group("session:1"), Bytes::from_static(b"one")).await.unwrap();
    // b is not subscribed to session:1; the first thing it sees is session:2's publication.
    a.publish(&group("session:2"), Bytes::from_static(b"two")).await.unwrap();
    assert_eq!(next_message(&mut a_in).await, (group("session:1"), Bytes::from_static(b"one")));
    assert_eq!(next_message(&mut b_in).await, (group("session:2"), Bytes::from_static(b"two")));
}

pub async fn unsubscribe_stops_delivery(f: &impl NodeFactory) {
    let (a, mut a_in) = f.node().await;
    let (b, _b_in) = f.node().await;
    a.subscribe(&[group("chat:x"), group("chat:y")]).await.unwrap();
    a.subscribe(&[group("chat:x")]).await.unwrap(); // idempotent
    a.unsubscribe(&[group("chat:x")]).await.unwrap();
    b.publish(&group("chat:x"), Bytes::from_static(b"gone")).await.unwrap();
    b.publish(&group("chat:y"), Bytes::from_static(b"kept")).await.unwrap();
    assert_eq!(next_message(&mut a_in).await, (group("chat:y"), Bytes::from_static(b"kept")));
}

pub async fn keeps_publication_order(f: &impl NodeFactory) {
    let (a, mut a_in) = f.node().await;
    let (b, _b_in) = f.node().await;
    a.subscribe(&[group("user:u")]).await.unwrap();
    for i in 0..200u32 {
        b.publish(&group("user:u"), Bytes::from(i.to_string())).await.unwrap();
    }
    for i in 0..200u32 {
        assert_eq!(next_message(&mut a_in).await.1, Bytes::from(i.to_string()));
    }
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
    });
    a.publish_and_enqueue(&chat, raw(1), job.encode()).await.unwrap();
    a.enqueue(job.encode()).await.unwrap();
    let (_, payload) = next_message(&mut a_in).await;
    let published = decoded(&payload).0;
    let jobs = a.read_jobs("c1", 10, Duration::from_millis(500)).await.unwrap();
    let stamped: Vec<StampedJob> = jobs.iter().map(|j| StampedJob::decode(&j.payload).unwrap()).collect();
    assert_eq!(stamped, vec![StampedJob { job: job.clone(), published: Some(published) }, StampedJob::from(job)]);
}

pub async fn publish_and_enqueue_delivers_live_and_durably(f: &impl NodeFactory) {
    let (a, mut a_in) = f.node().await;
    let (b, _b_in) = f.node().await;
    a.subscribe(&[group("session:j")]).await.unwrap();
    b.publish_and_enqueue(&group("session:j"), Bytes::from_static(b"live"), Bytes::from_static(b"job-1"))
        .await
        .unwrap();
    assert_eq!(next_message(&mut a_in).await.1, Bytes::from_static(b"live"));
    let jobs = a.read_jobs("c1", 10, Duration::from_millis(500)).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].payload, Bytes::from_static(b"job-1"));
    // Delivered once: a second read by another consumer gets nothing new.
    assert!(b.read_jobs("c2", 10, Duration::from_millis(50)).await.unwrap().is_empty());
}

pub async fn a_send_made_once_is_published_once_and_answered_with_the_first(f: &impl NodeFactory) {
    let (a, mut a_in) = f.node().await;
    let (b, _b_in) = f.node().await;
    a.subscribe(&[group("chat:once")]).await.unwrap();
    let once = super::Once { id: "ann:c-1".into(), ttl: Duration::from_secs(60) };
    let first = b.publish_once(&once, &group("chat:once"), raw(1), Bytes::from_static(b"job-1")).await.unwrap();
    assert_eq!(first, None, "the first send is published");
    // The resend, from another node, with another payload: nothing published, the first returned.
    let again = a.publish_once(&once, &group("chat:once"), raw(2), Bytes::from_static(b"job-2")).await.unwrap();
    assert_eq!(again, Some(raw(1)));
    // Another id is another send.
    let other = super::Once { id: "ann:c-2".into(), ttl: Duration::from_secs(60) };
    assert_eq!(a.publish_once(&other, &group("chat:once"), raw(3), Bytes::from_static(b"job-3")).await.unwrap(), None);
    let received: Vec<u64> = [next_message(&mut a_in).await.1, next_message(&mut a_in).await.1]
        .iter()
        .map(|p| match Envelope::decode(p).unwrap().event {
            Event::Raw { event } => event["n"].as_u64().unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(received, [1, 3]);
    let jobs = a.read_jobs("c1", 10, Duration::from_millis(500)).await.unwrap();
    let payloads: Vec<_> = jobs.iter().map(|j| j.payload.clone()).collect();
    assert_eq!(payloads, [Bytes::from_static(b"job-1"), Bytes::from_static(b"job-3")]);
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
    assert_eq!(a.read_jobs("busy", 10, Duration::from_millis(500)).await.unwrap().len(), 1);
    assert!(a.claim_stale_jobs("live", Duration::from_secs(3600), 10).await.unwrap().is_empty());
}

pub async fn read_jobs_returns_empty_when_idle(f: &impl NodeFactory) {
    let (a, _a_in) = f.node().await;
    assert!(a.read_jobs("c", 10, Duration::from_millis(20)).await.unwrap().is_empty());
}

#[cfg(test)]
mod memory_contract {
    use super::*;
    use crate::broker::MemoryBus;

    struct Memory(MemoryBus);

    #[async_trait]
    impl NodeFactory for Memory {
        async fn node(&self) -> (Arc<dyn Broker>, mpsc::Receiver<Inbound>) {
            let (broker, inbox) = self.0.node();
            (Arc::new(broker), inbox)
        }
    }

    #[tokio::test]
    async fn memory_broker_passes_the_contract() {
        run_all(|| Memory(MemoryBus::new(GroupWindow::default()))).await;
    }

    /// Embedded mode's bus: jobs journaled in a SQLite file (a fresh one per case).
    struct Durable(tokio::sync::OnceCell<MemoryBus>, std::path::PathBuf);

    #[async_trait]
    impl NodeFactory for Durable {
        async fn node(&self) -> (Arc<dyn Broker>, mpsc::Receiver<Inbound>) {
            let bus = self
                .0
                .get_or_init(|| async {
                    let url = format!("sqlite://{}", self.1.join("journal.db").display());
                    let crate::store::Store::Sqlite(pool) = crate::store::Store::connect(&url, 2).await.unwrap() else {
                        unreachable!("a sqlite:// url")
                    };
                    MemoryBus::durable(pool, GroupWindow::default()).await.unwrap()
                })
                .await;
            let (broker, inbox) = bus.node();
            (Arc::new(broker), inbox)
        }
    }

    #[tokio::test]
    async fn the_journaled_memory_broker_passes_the_contract() {
        let root = std::env::temp_dir().join(format!("rtgate-journal-{}", uuid::Uuid::new_v4().simple()));
        let case = std::sync::atomic::AtomicUsize::new(0);
        run_all(|| {
            let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Durable(tokio::sync::OnceCell::new(), root.join(n.to_string()))
        })
        .await;
        let _ = std::fs::remove_dir_all(root);
    }
}
