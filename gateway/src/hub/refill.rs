//! Refill: no gap after a pub/sub reconnect.
//!
//! On `Inbound::Reconnected` every group starts *refilling* (`start_refill`: live publications
//! wait in the group), the subscription manager subscribes again to everything, reads each
//! group's window after the last position delivered (`read_windows`, `Broker::window_since`) and
//! hands the windows to the dispatcher, which delivers each window, then what waited, in order
//! and each once (`finish_refill`: a publication at or below the group's position is a duplicate
//! and skipped). What a window no longer holds is counted (`gateway_window_gaps_total`).

use shared::broker::{Broker, WindowRead};
use shared::event::{Group, Position};

use super::commands::Refill;
use super::delivery::{admit, decode, fan_out, Admitted};
use super::registry::{Hub, Received};
use crate::metrics::Metrics;

/// Groups whose windows are read in one broker call.
const WINDOW_BATCH: usize = 256;

/// Every group starts refilling (`GroupEntry::waiting`); returns them all. Called before the
/// manager subscribes again after a reconnect.
pub(super) fn start_refill(hub: &Hub) -> Vec<Group> {
    let mut state = hub.lock();
    for entry in state.groups.values_mut() {
        entry.waiting.get_or_insert_with(Vec::new);
    }
    state.groups.keys().cloned().collect()
}

/// The refilling groups and the position each was last at (`None`: never positioned).
fn refilling(hub: &Hub) -> Vec<(Group, Option<Position>)> {
    let state = hub.lock();
    state.groups.iter().filter(|(_, e)| e.waiting.is_some()).map(|(g, e)| (g.clone(), e.last)).collect()
}

/// Ends `group`'s refill (on the dispatcher): delivers what its window held after its
/// position (`read`; `None` when the window could not be read), then the live publications
/// that waited, in order and each once. Returns how many came from the window.
pub(super) fn finish_refill(hub: &Hub, group: &Group, read: Option<WindowRead>) -> usize {
    let (members, admitted, refilled) = {
        let mut state = hub.lock();
        let Some(entry) = state.groups.get_mut(group) else { return 0 };
        let Some(waiting) = entry.waiting.take() else { return 0 };
        let complete = read.as_ref().is_some_and(|r| r.complete) && !std::mem::take(&mut entry.overflowed);
        if let (Some(read), Some(last)) = (&read, entry.last) {
            if read.current.epoch == last.epoch && read.current.seq < last.seq {
                // The counter went back (Redis lost its latest writes): the seqs after it are
                // new publications, not duplicates.
                entry.last = Some(read.current);
            }
        }
        let from_window: Vec<Received> =
            read.map(|r| r.entries).unwrap_or_default().iter().filter_map(|p| decode(group, p)).collect();
        let window_len = from_window.len();
        // Sorted by position (stable: a publication without one keeps its place first), so
        // that the window's and the live copies of one publication meet and the second is
        // skipped as a duplicate; both lists are in order already.
        let mut all: Vec<(usize, Received)> = from_window.into_iter().chain(waiting).enumerate().collect();
        all.sort_by_key(|(_, received)| received.position().unwrap_or_default());
        let mut admitted = Vec::with_capacity(all.len());
        let mut refilled = 0;
        for (i, received) in all {
            match admit(hub, entry, &received) {
                Admitted::Duplicate => continue,
                Admitted::ToAccess => {}
                Admitted::ToMembers => admitted.push(received),
            }
            if i < window_len {
                refilled += 1;
            }
        }
        if !complete {
            Metrics::incr(&hub.metrics.window_gaps);
            tracing::warn!(%group, "publications missed during the reconnect are no longer in the group's window");
        }
        (entry.snapshot(), admitted, refilled)
    };
    for received in &admitted {
        fan_out(hub, group, &members, received);
    }
    hub.metrics.window_refills.inc_by(refilled as u64);
    refilled
}

/// After a resubscription (on the subscription manager): reads the windows after each refilling
/// group's position and hands them to the dispatcher, then says it is done. A group never
/// positioned (its position could not be read) has no window to read from: what waited is
/// delivered and the group counted as a gap.
pub(super) async fn read_windows(hub: &Hub, broker: &dyn Broker) {
    // The dispatcher may be gone (the node stopping): then nobody waits for these either.
    let groups = refilling(hub);
    for chunk in groups.chunks(WINDOW_BATCH) {
        let reads: Vec<(Group, Position)> =
            chunk.iter().filter_map(|(group, at)| at.map(|at| (group.clone(), at))).collect();
        let windows = match broker.window_since(&reads).await {
            Ok(windows) => windows.into_iter().map(Some).collect(),
            Err(e) => {
                tracing::warn!(error = %e, groups = reads.len(), "reading group windows failed");
                vec![None; reads.len()]
            }
        };
        for ((group, _), window) in reads.into_iter().zip(windows) {
            let _ = hub.refills.send(Refill::Window(group, window)).await;
        }
        for (group, _) in chunk.iter().filter(|(_, at)| at.is_none()) {
            let _ = hub.refills.send(Refill::Window(group.clone(), None)).await;
        }
    }
    let _ = hub.refills.send(Refill::Done).await;
}
