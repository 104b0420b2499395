//! The subscription manager: the only task that changes the node's subscriptions, one command
//! at a time, so that a subscribe and an unsubscribe of one group can never overtake each other.
//!
//! Invariants:
//! * Before subscribing a new group it reads the group's position (`Broker::positions`): where
//!   the node's live stream of that group starts. Whatever is published after it is either
//!   delivered live or found in the window by a later refill.
//! * A group left empty is unsubscribed `LINGER` after its last member left, unless one came back.
//! * Joiners waiting for a subscription are released whether it succeeded or not; a failure is
//!   covered by the resubscription that follows the next `Reconnected`.

use std::collections::HashSet;
use std::sync::Arc;

use shared::broker::Broker;
use shared::event::Group;
use tokio_util::sync::CancellationToken;

use super::refill::{read_windows, start_refill};
use super::registry::{Hub, LINGER};

/// Most subscription changes sent to the broker in one command.
const SUBSCRIBE_BATCH: usize = 1024;

/// Runs until `stop`, taking what `Hub::manager` was asked.
pub(super) async fn manage_subscriptions(hub: Arc<Hub>, broker: Arc<dyn Broker>, stop: CancellationToken) {
    // What the broker has confirmed for this node since the last (re)connect.
    let mut subscribed: HashSet<Group> = HashSet::new();
    let mut sweep = tokio::time::interval(LINGER / 2);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = hub.manager.requested() => {
                let (mut wanted, resync) = hub.manager.take();
                if resync {
                    subscribed.clear();
                    wanted = start_refill(&hub);
                    wanted.extend(hub.pinned.iter().cloned());
                }
                let failed = subscribe(&hub, broker.as_ref(), wanted, &mut subscribed).await;
                if resync && !failed {
                    read_windows(&hub, broker.as_ref()).await;
                }
            }
            _ = sweep.tick() => {
                let mut gone = hub.sweep();
                gone.retain(|g| subscribed.remove(g));
                for chunk in gone.chunks(SUBSCRIBE_BATCH) {
                    if let Err(e) = broker.unsubscribe(chunk).await {
                        tracing::debug!(error = %e, "unsubscribe failed (the connection is gone anyway)");
                    }
                }
            }
        }
    }
}

/// Subscribes to the groups of `wanted` the hub still holds and the broker has not confirmed,
/// positioning each new one first. Returns true if a subscribe failed.
async fn subscribe(hub: &Hub, broker: &dyn Broker, mut wanted: Vec<Group>, subscribed: &mut HashSet<Group>) -> bool {
    wanted.sort();
    wanted.dedup();
    wanted.retain(|g| !subscribed.contains(g) && (hub.holds(g) || hub.pinned.contains(g)));
    let unpositioned = hub.unpositioned(&wanted);
    if !unpositioned.is_empty() {
        match broker.positions(&unpositioned).await {
            Ok(positions) => hub.set_positions(&unpositioned, positions),
            Err(e) => tracing::warn!(error = %e, "reading group positions failed"),
        }
    }
    let mut failed = false;
    for chunk in wanted.chunks(SUBSCRIBE_BATCH) {
        match broker.subscribe(chunk).await {
            Ok(()) => subscribed.extend(chunk.iter().cloned()),
            Err(e) => {
                // The next `Reconnected` subscribes again to everything held.
                tracing::warn!(error = %e, groups = chunk.len(), "subscribe failed");
                failed = true;
            }
        }
    }
    // Joiners stop waiting either way; on failure they are covered by the resync.
    hub.mark_subscribed(&wanted);
    failed
}
