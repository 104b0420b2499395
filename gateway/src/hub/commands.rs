//! What the hub's two tasks are asked to do: the subscription manager (`super::subscriptions`),
//! the only one that talks to the broker about subscriptions, and the dispatcher
//! (`super::delivery`), the only one that delivers publications to sockets.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use shared::broker::WindowRead;
use shared::event::Group;
use tokio::sync::Notify;

/// What the subscription manager has to do: a set, not a queue, so that it is bounded by the
/// groups the hub holds however many joins and reconnects come before the manager looks, and it
/// can be written to under the hub's lock without waiting.
#[derive(Default)]
pub(crate) struct SubscriptionRequests {
    /// Groups a socket joined that the node is not subscribed to yet.
    groups: Mutex<HashSet<Group>>,
    /// The pub/sub connection is back: subscribe to everything again and refill every group.
    resync: AtomicBool,
    wake: Notify,
}

impl SubscriptionRequests {
    pub(crate) fn subscribe(&self, group: Group) {
        self.groups.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(group);
        self.wake.notify_one();
    }

    pub(crate) fn resync(&self) {
        self.resync.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Waits for requests (a request made while nobody waits is kept for the next wait).
    pub(crate) async fn requested(&self) {
        self.wake.notified().await;
    }

    /// Takes everything asked so far: the groups, and whether to resync.
    pub(crate) fn take(&self) -> (Vec<Group>, bool) {
        let groups = std::mem::take(&mut *self.groups.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        (groups.into_iter().collect(), self.resync.swap(false, Ordering::Relaxed))
    }
}

/// To the dispatcher, after a resubscription: each group's refill, then the end of it. A bounded
/// queue: the manager waits for the dispatcher, never the other way round.
pub(crate) enum Refill {
    /// What `group`'s window held after its position (`None`: it could not be read).
    Window(Group, Option<WindowRead>),
    /// Every group has been refilled: the node is in sync again.
    Done,
}

/// Refills waiting for the dispatcher at most.
pub(crate) const REFILL_QUEUE: usize = 256;
