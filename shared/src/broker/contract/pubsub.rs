//! The contract of `PubSub`: delivery to subscribed nodes only and in order, atomic publication with jobs, sends made once.

use std::time::Duration;

use bytes::Bytes;

use super::{group, next_message, raw, NodeFactory};
use crate::broker::Once;
use crate::event::{Envelope, Event};

/// Every case of this suite, each on a fresh bus from `make`.
pub async fn run_all<F: NodeFactory>(make: &impl Fn() -> F) {
    publish_all_reaches_every_group_and_the_stream(&make()).await;
    delivers_to_subscribed_nodes_only(&make()).await;
    unsubscribe_stops_delivery(&make()).await;
    keeps_publication_order(&make()).await;
    publish_and_enqueue_delivers_live_and_durably(&make()).await;
    a_send_made_once_is_published_once_and_answered_with_the_first(&make()).await;
}

pub async fn publish_all_reaches_every_group_and_the_stream(f: &impl NodeFactory) {
    let (a, mut a_in) = f.node().await;
    let (b, _b_in) = f.node().await;
    a.subscribe(&[group("user:m1"), group("user:m2")]).await.unwrap();
    let publications = [(group("user:m1"), Bytes::from_static(b"one")), (group("user:m2"), Bytes::from_static(b"two"))];
    b.publish_all(&publications, &[Bytes::from_static(b"j1"), Bytes::from_static(b"j2")]).await.unwrap();
    // Two groups may live on two Redis Cluster masters: no order between them is promised.
    let mut received = vec![next_message(&mut a_in).await, next_message(&mut a_in).await];
    received.sort_by(|x, y| x.0.as_str().cmp(y.0.as_str()));
    assert_eq!(
        received,
        vec![(group("user:m1"), Bytes::from_static(b"one")), (group("user:m2"), Bytes::from_static(b"two"))]
    );
    let jobs = a.read_jobs("c", 10, Duration::from_millis(500)).await.unwrap();
    let payloads: Vec<_> = jobs.iter().map(|j| j.payload.clone()).collect();
    assert_eq!(payloads, vec![Bytes::from_static(b"j1"), Bytes::from_static(b"j2")]);
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
    let once = Once { id: "ann:c-1".into(), ttl: Duration::from_secs(60) };
    let first = b.publish_once(&once, &group("chat:once"), raw(1), Bytes::from_static(b"job-1")).await.unwrap();
    assert_eq!(first, None, "the first send is published");
    // The resend, from another node, with another payload: nothing published, the first returned.
    let again = a.publish_once(&once, &group("chat:once"), raw(2), Bytes::from_static(b"job-2")).await.unwrap();
    assert_eq!(again, Some(raw(1)));
    // Another id is another send.
    let other = Once { id: "ann:c-2".into(), ttl: Duration::from_secs(60) };
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
