//! The contract of `GroupLog`: every publication numbered per group and kept in its window; a trimmed window said to be incomplete.

use super::{decoded, group, next_message, raw, NodeFactory};
use crate::config::GroupWindow;
use crate::event::Position;

/// Every case of this suite, each on a fresh bus from `make`.
pub async fn run_all<F: NodeFactory>(make: &impl Fn() -> F) {
    publications_are_numbered_per_group_and_kept_in_its_window(&make()).await;
    a_trimmed_window_is_reported_incomplete(&make()).await;
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
    assert_eq!(reads[0].entries.iter().map(|p| decoded(&p.payload).1).collect::<Vec<_>>(), vec![3, 4]);
    assert_eq!(reads[1].entries.iter().map(|p| decoded(&p.payload).1).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    for p in reads.iter().flat_map(|r| &r.entries) {
        assert_eq!(p.stamp.map(|s| s.position), Some(decoded(&p.payload).0), "each entry's stamp beside its bytes");
    }
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
    let kept: Vec<u64> = read.entries.iter().map(|p| decoded(&p.payload).0.seq).collect();
    assert!(kept.len() >= GroupWindow::default().len, "the window keeps at least its length");
    assert_eq!(kept, (kept[0]..=start + 700).collect::<Vec<_>>(), "what is kept is the latest, in order");
}
