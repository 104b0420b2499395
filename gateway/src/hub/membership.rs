//! A socket's place in the hub (`Attached`): it attaches (getting its bounded outbox), joins and
//! leaves groups and rooms, and leaves everything when dropped.
//!
//! Invariants:
//! * The first local member of a group makes the node subscribe (`SubscriptionRequests::subscribe`),
//!   and `join` returns only once the subscription is confirmed (or `JOIN_WAIT` passed), so a
//!   publication made after the client saw its socket open is not missed.
//! * Every change of a user's sockets on this node, and of their sockets in a room, is marked
//!   for the presence task (`super::changes`), which reads the hub's truth when it applies them.
//! * Dropping an `Attached` undoes everything it did, so an upgrade that never completes leaks
//!   nothing.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use shared::event::Group;
use shared::ids::UserId;

use super::link::{Outbound, SocketLink};
use super::registry::{GroupEntry, Hub, HubState};
use super::render::Format;
use crate::errors::CloseReason;

/// Upper bound on how long a join waits for its subscription to be confirmed.
const JOIN_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub(crate) enum HubError {
    #[error("this user already has {0} open sockets on this node")]
    TooManySockets(usize),
}

/// A socket's place in the hub. Dropping it leaves every group and frees the user's slot.
pub(crate) struct Attached {
    hub: Arc<Hub>,
    link: Arc<SocketLink>,
    groups: Vec<Group>,
    /// The subset of `groups` that count as rooms for presence.
    rooms: Vec<Group>,
    /// For a socket that keeps a resume token: each group's last `seq` this socket has been
    /// given (or, before its first frame, where the node's stream stood when it joined).
    positions: Option<BTreeMap<Group, u64>>,
}

impl Attached {
    /// Registers a socket in `hub` and gives it its outbox.
    pub(crate) fn attach(
        hub: &Arc<Hub>,
        user: Option<UserId>,
        format: Format,
    ) -> Result<(Attached, flume::Receiver<Outbound>), HubError> {
        if let Some(user) = &user {
            let mut state = hub.lock();
            let count = state.sockets_per_user.entry(user.clone()).or_default();
            if *count >= hub.max_sockets_per_user {
                return Err(HubError::TooManySockets(*count));
            }
            *count += 1;
            hub.presence.user(user);
        }
        let id = hub.next_socket.fetch_add(1, Ordering::Relaxed);
        let (link, outbox) =
            SocketLink::new(id, user, format, hub.outbox_frames, hub.outbox_bytes, hub.metrics.outbox_bytes.clone());
        let link = Arc::new(link);
        hub.lock().links.insert(id, Arc::downgrade(&link));
        if hub.draining.load(Ordering::Relaxed) {
            link.kick(CloseReason::Restarting);
        }
        let attached = Attached { hub: hub.clone(), link, groups: Vec::new(), rooms: Vec::new(), positions: None };
        Ok((attached, outbox))
    }
}

/// Takes `user` (if any) out of `room` on this node: the presence task hears of their last socket
/// there.
fn leave_room_locked(hub: &Hub, state: &mut HubState, room: &Group, user: Option<&UserId>) {
    let Some(user) = user else { return };
    let key = (room.clone(), user.clone());
    if let Some(count) = state.room_sockets.get_mut(&key) {
        *count -= 1;
        if *count == 0 {
            state.room_sockets.remove(&key);
            hub.presence.room(room, user);
        }
    }
}

impl Attached {
    pub(crate) fn link(&self) -> &Arc<SocketLink> {
        &self.link
    }

    /// Adds this socket to `group`, and returns once the node is subscribed to it (so that a
    /// publication made after the client saw its socket open is not missed).
    pub(crate) async fn join(&mut self, group: Group) {
        if self.groups.contains(&group) {
            return;
        }
        let (mut ready, joined_at) = {
            let mut state = self.hub.lock();
            let entry = state.groups.entry(group.clone()).or_insert_with(|| GroupEntry::new(false));
            entry.insert(self.link.clone());
            let joined_at = entry.last;
            let ready = entry.subscribed.subscribe();
            if !*ready.borrow() {
                self.hub.manager.subscribe(group.clone());
            }
            self.hub.metrics.groups.set(state.groups.len() as i64);
            (ready, joined_at)
        };
        self.groups.push(group.clone());
        let _ = tokio::time::timeout(JOIN_WAIT, ready.wait_for(|done| *done)).await;
        if let Some(positions) = &mut self.positions {
            // Where the node's stream stood as the socket became a member: everything later
            // reaches it. A group new to the node has its position once it is subscribed, before
            // anything is delivered in it.
            let at = joined_at.or_else(|| self.hub.lock().groups.get(&group).and_then(|e| e.last));
            if let Some(at) = at {
                positions.entry(group).or_insert(at.seq);
            }
        }
    }

    /// Makes this socket keep a position per group, handed to its client as a resume token
    /// (`crate::resume::ResumeToken`): its frames come with their group from now on. Called
    /// before it joins anything.
    pub(crate) fn track_positions(&mut self) {
        self.link.track();
        self.positions.get_or_insert_with(BTreeMap::new);
    }

    /// Each group's position, for a socket that keeps them.
    pub(crate) fn positions(&self) -> Option<&BTreeMap<Group, u64>> {
        self.positions.as_ref()
    }

    /// Sets `group`'s position (a resuming socket: where its client's token stood, then what was
    /// replayed).
    pub(crate) fn set_position(&mut self, group: &Group, seq: u64) {
        if let Some(positions) = &mut self.positions {
            if self.groups.contains(group) {
                positions.insert(group.clone(), seq);
            }
        }
    }

    /// Records that this socket was given `group`'s publication `seq`.
    pub(crate) fn advance(&mut self, group: &Group, seq: u64) {
        match self.positions.as_mut().and_then(|p| p.get_mut(group)) {
            Some(position) => *position = (*position).max(seq),
            None => self.set_position(group, seq),
        }
    }

    pub(crate) fn in_group(&self, group: &Group) -> bool {
        self.groups.contains(group)
    }

    /// Joins `group` as a room: the socket's user counts as present in it, cluster-wide.
    pub(crate) async fn join_room(&mut self, group: Group) {
        self.join(group.clone()).await;
        if self.rooms.contains(&group) {
            return;
        }
        if let Some(user) = &self.link.user {
            let mut state = self.hub.lock();
            let count = state.room_sockets.entry((group.clone(), user.clone())).or_default();
            *count += 1;
            if *count == 1 {
                self.hub.presence.room(&group, user);
            }
        }
        self.rooms.push(group);
    }

    /// Removes this socket from `group` (the subscription lingers, then goes if nobody rejoined).
    pub(crate) fn leave(&mut self, group: &Group) {
        self.groups.retain(|g| g != group);
        if let Some(positions) = &mut self.positions {
            positions.remove(group);
        }
        let was_room = self.rooms.contains(group);
        self.rooms.retain(|g| g != group);
        let mut state = self.hub.lock();
        if let Some(entry) = state.groups.get_mut(group) {
            entry.remove(self.link.id);
        }
        if was_room {
            leave_room_locked(&self.hub, &mut state, group, self.link.user.as_ref());
        }
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        let mut state = self.hub.lock();
        state.links.remove(&self.link.id);
        for group in &self.groups {
            if let Some(entry) = state.groups.get_mut(group) {
                entry.remove(self.link.id);
            }
        }
        for room in &self.rooms {
            leave_room_locked(&self.hub, &mut state, room, self.link.user.as_ref());
        }
        if let Some(user) = &self.link.user {
            if let Some(count) = state.sockets_per_user.get_mut(user) {
                *count -= 1;
                if *count == 0 {
                    state.sockets_per_user.remove(user);
                }
                self.hub.presence.user(user);
            }
        }
    }
}
