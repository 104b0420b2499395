//! The registry: which local sockets are in which group, and what the node knows of each group,
//! under the hub's one lock.
//!
//! Invariants:
//! * The lock is never held across an await, and nothing slow happens under it: no rendering, no
//!   offering to outboxes, no JSON. A publication takes its group's members as a snapshot
//!   (`GroupEntry::snapshot`) under the lock and does the rest outside it.
//! * A group's `members` map is the truth; its snapshot is rebuilt from it at most once per
//!   publication after a join or leave, so joins and leaves cost O(1) and a broadcast O(members)
//!   once.
//! * `last` only moves forward within an epoch, and moves under the lock together with the
//!   snapshot taken for that publication: a socket that joins later starts after it, one that
//!   joined before receives it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use shared::event::{Envelope, Event, Group, Position, Stamp};
use shared::ids::{MessageId, UserId};
use tokio::sync::{mpsc, watch};

use super::changes::Changes;
use super::commands::{Refill, SubscriptionRequests};
use super::link::SocketLink;
use super::render::Renderer;
use crate::errors::CloseReason;
use crate::metrics::Metrics;

/// How long an emptied group stays subscribed (so that a reconnecting client does not cause an
/// UNSUBSCRIBE/SUBSCRIBE pair).
pub(super) const LINGER: Duration = Duration::from_secs(2);

/// A publication as the hub holds it: decoded, with the broker's stamp beside it (where it stands
/// in its group, when it went out), which the hub reads instead of the envelope's copy.
pub(super) struct Received {
    pub(super) stamp: Option<Stamp>,
    pub(super) envelope: Envelope,
}

impl Received {
    pub(super) fn position(&self) -> Option<Position> {
        self.stamp.map(|stamp| stamp.position)
    }
}

/// A group's members as one publication sees them.
pub(super) type Members = Arc<[Arc<SocketLink>]>;

pub(super) struct GroupEntry {
    /// Who is in the group on this node, by socket id.
    pub(super) members: HashMap<u64, Arc<SocketLink>>,
    /// `members` as a shared slice; `None` after a change, rebuilt by the next publication.
    snapshot: Option<Members>,
    /// When the last member left; the manager unsubscribes after `LINGER`.
    pub(super) empty_since: Option<Instant>,
    /// True once the manager has handled this group's subscription.
    pub(super) subscribed: watch::Sender<bool>,
    /// Ids of the last chat messages delivered in this group, oldest first (empty, and
    /// unallocated, in groups without chat messages).
    pub(super) recent: VecDeque<MessageId>,
    /// The position of the last publication delivered, or where the node's live stream of the
    /// group started; `None` until the manager has read it.
    pub(super) last: Option<Position>,
    /// `Some` while the group refills after a reconnect: live publications wait here, decoded.
    pub(super) waiting: Option<Vec<Received>>,
    /// Live publications dropped because `waiting` was full (a gap, counted at the refill).
    pub(super) overflowed: bool,
    /// The control group's entry: its events go to the access task, not to sockets.
    pub(super) control: bool,
}

impl GroupEntry {
    pub(super) fn new(control: bool) -> Self {
        Self {
            members: HashMap::new(),
            snapshot: None,
            empty_since: None,
            subscribed: watch::Sender::new(false),
            recent: VecDeque::new(),
            last: None,
            waiting: None,
            overflowed: false,
            control,
        }
    }

    pub(super) fn insert(&mut self, link: Arc<SocketLink>) {
        self.members.insert(link.id, link);
        self.snapshot = None;
        self.empty_since = None;
    }

    pub(super) fn remove(&mut self, id: u64) {
        if self.members.remove(&id).is_some() {
            self.snapshot = None;
        }
        if self.members.is_empty() {
            self.empty_since.get_or_insert_with(Instant::now);
        }
    }

    /// The members now, shared: cloning it is one reference count.
    pub(super) fn snapshot(&mut self) -> Members {
        self.snapshot.get_or_insert_with(|| self.members.values().cloned().collect()).clone()
    }
}

#[derive(Default)]
pub(super) struct HubState {
    pub(super) groups: HashMap<Group, GroupEntry>,
    pub(super) sockets_per_user: HashMap<UserId, usize>,
    /// Sockets per (room, user) on this node: who is "in" a Pythia channel room.
    pub(super) room_sockets: HashMap<(Group, UserId), usize>,
    /// Every socket attached, by id, whatever its groups (a drain closes them all).
    pub(super) links: HashMap<u64, Weak<SocketLink>>,
}

/// Local sockets, the groups they are in, and the node's subscriptions that follow (see the
/// module docs of `crate::hub`).
pub(crate) struct Hub {
    /// Never held across an await: every section under it is short and synchronous.
    pub(super) state: Mutex<HubState>,
    /// Renders publications per wire format (the protocols').
    pub(super) renderer: Box<dyn Renderer>,
    /// What the subscription manager has to do (a set: bounded by the groups held).
    pub(super) manager: SubscriptionRequests,
    /// From the subscription manager to the dispatcher: the windows read after a resubscription.
    pub(super) refills: mpsc::Sender<Refill>,
    /// Users and rooms whose sockets on this node changed, for the presence task.
    pub(super) presence: Arc<Changes>,
    /// Membership and account changes from the control group, to the access task. Bounded;
    /// when full, `access_overflowed` asks the access task to re-check everything instead.
    pub(super) access: mpsc::Sender<Event>,
    pub(super) access_overflowed: AtomicBool,
    /// Set when the node drains: a socket attached from then on is closed at once (`drain`).
    pub(super) draining: AtomicBool,
    /// False between a pub/sub disconnect and the completed resubscription (`/readyz`).
    pub(super) in_sync: AtomicBool,
    /// The node's own groups, subscribed for as long as it runs: the control group and its
    /// canaries.
    pub(super) pinned: Vec<Group>,
    /// The node's canary groups, one per bucket (`shared::keys::canary_groups`).
    pub(super) canaries: Vec<Group>,
    /// The number of the last canary that came back through each canary group, in its order.
    pub(super) canary_seen: Vec<AtomicU64>,
    /// Completed resubscriptions after a (re)connect.
    pub(super) resyncs: AtomicU64,
    pub(super) next_socket: AtomicU64,
    pub(super) outbox_frames: usize,
    pub(super) outbox_bytes: usize,
    pub(super) max_sockets_per_user: usize,
    pub(super) metrics: Arc<Metrics>,
}

impl Hub {
    pub(super) fn lock(&self) -> MutexGuard<'_, HubState> {
        // A panic under this lock would be a bug in a few lines of map code; keep serving.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `user`'s sockets open on this node.
    pub(crate) fn sockets_of(&self, user: &UserId) -> usize {
        self.lock().sockets_per_user.get(user).copied().unwrap_or(0)
    }

    /// Users with at least one authenticated socket on this node.
    pub(crate) fn local_users(&self) -> Vec<UserId> {
        self.lock().sockets_per_user.keys().cloned().collect()
    }

    /// The groups with the most sockets on this node, largest first (for the console).
    pub(crate) fn largest_groups(&self, limit: usize) -> Vec<(String, usize)> {
        let mut sizes: Vec<(String, usize)> = {
            let state = self.lock();
            state
                .groups
                .iter()
                .filter(|(_, e)| !e.members.is_empty())
                .map(|(g, e)| (g.to_string(), e.members.len()))
                .collect()
        };
        sizes.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        sizes.truncate(limit);
        sizes
    }

    /// (room, user) pairs with at least one socket on this node.
    pub(crate) fn local_rooms(&self) -> Vec<(Group, UserId)> {
        self.lock().room_sockets.keys().cloned().collect()
    }

    /// True when `user` has a socket in `room` on this node.
    pub(crate) fn in_room(&self, room: &Group, user: &UserId) -> bool {
        self.lock().room_sockets.contains_key(&(room.clone(), user.clone()))
    }

    /// The groups with at least one socket on this node.
    pub(crate) fn held_groups(&self) -> Vec<Group> {
        self.lock().groups.iter().filter(|(_, e)| !e.members.is_empty()).map(|(g, _)| g.clone()).collect()
    }

    /// True (once) when control events were dropped because the access task's queue was full:
    /// every socket's access must then be re-checked.
    pub(crate) fn take_access_overflow(&self) -> bool {
        self.access_overflowed.swap(false, Ordering::Relaxed)
    }

    /// True when the node's subscriptions match what its sockets need.
    pub(crate) fn in_sync(&self) -> bool {
        self.in_sync.load(Ordering::Relaxed)
    }

    /// The node's canary groups (`crate::canary`), one per bucket.
    pub(crate) fn canary_groups(&self) -> &[Group] {
        &self.canaries
    }

    /// The number of the last canary that came back through every canary group.
    pub(crate) fn canary_seen(&self) -> u64 {
        self.canary_seen.iter().map(|seen| seen.load(Ordering::Relaxed)).min().unwrap_or(0)
    }

    /// How many times the node has subscribed again to everything after a (re)connect.
    pub(crate) fn resyncs(&self) -> u64 {
        self.resyncs.load(Ordering::Relaxed)
    }

    /// True when this node delivered the chat message `id` in `group` recently.
    pub(crate) fn saw_message(&self, group: &Group, id: &MessageId) -> bool {
        self.lock().groups.get(group).is_some_and(|entry| entry.recent.contains(id))
    }

    /// The users with a socket in `group` on this node.
    pub(crate) fn users_in(&self, group: &Group) -> Vec<UserId> {
        let state = self.lock();
        let Some(entry) = state.groups.get(group) else { return Vec::new() };
        let users: HashSet<&UserId> = entry.members.values().filter_map(|link| link.user.as_ref()).collect();
        users.into_iter().cloned().collect()
    }

    /// Closes `user`'s sockets on this node with `reason`: those in `group`, or all of them.
    pub(crate) fn kick(&self, user: &UserId, group: Option<&Group>, reason: CloseReason) {
        let state = self.lock();
        let entries: Vec<&GroupEntry> = match group {
            Some(group) => state.groups.get(group).into_iter().collect(),
            None => state.groups.values().collect(),
        };
        for link in entries.into_iter().flat_map(|e| e.members.values()) {
            if link.user.as_ref() == Some(user) {
                link.kick(reason);
            }
        }
    }

    /// Takes `user`'s sockets on this node out of `room` (each socket's task leaves it).
    pub(crate) fn evict(&self, user: &UserId, room: &Group) {
        let state = self.lock();
        let Some(entry) = state.groups.get(room) else { return };
        for link in entry.members.values().filter(|link| link.user.as_ref() == Some(user)) {
            link.offer_leave(room, &self.metrics);
        }
    }

    /// Removes groups empty for longer than `LINGER`; returns them for unsubscribing.
    pub(super) fn sweep(&self) -> Vec<Group> {
        let mut state = self.lock();
        let now = Instant::now();
        let mut gone = Vec::new();
        state.groups.retain(|group, entry| {
            let expired =
                !entry.control && entry.members.is_empty() && entry.empty_since.is_some_and(|t| now - t >= LINGER);
            if expired {
                gone.push(group.clone());
            }
            !expired
        });
        self.metrics.groups.set(state.groups.len() as i64);
        gone
    }

    pub(super) fn holds(&self, group: &Group) -> bool {
        self.lock().groups.contains_key(group)
    }

    pub(super) fn mark_subscribed(&self, groups: &[Group]) {
        let state = self.lock();
        for group in groups {
            if let Some(entry) = state.groups.get(group) {
                entry.subscribed.send_replace(true);
            }
        }
    }

    /// Records where the node's live stream of each group starts, for the groups not yet positioned.
    pub(super) fn set_positions(&self, groups: &[Group], positions: Vec<Position>) {
        let mut state = self.lock();
        for (group, at) in groups.iter().zip(positions) {
            if let Some(entry) = state.groups.get_mut(group) {
                entry.last.get_or_insert(at);
            }
        }
    }

    /// Of `groups`, those whose position has not been read yet.
    pub(super) fn unpositioned(&self, groups: &[Group]) -> Vec<Group> {
        let state = self.lock();
        groups.iter().filter(|g| state.groups.get(*g).is_some_and(|e| e.last.is_none())).cloned().collect()
    }
}
