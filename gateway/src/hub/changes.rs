//! What changed about the hub's sockets since the presence task (`crate::presence`) last looked:
//! users whose sockets on this node came or went, and (room, user) pairs whose sockets in a room
//! did. A set, not a queue: bounded by the users and rooms on this node, two changes of one user
//! before the task looks cost one write, and the hub marks them under its lock without waiting.
//! The presence task reads the hub's current truth for each (`Hub::sockets_of`,
//! `Hub::in_room`), so the order of marks does not matter.

use std::collections::HashSet;
use std::sync::Mutex;

use shared::event::Group;
use shared::ids::UserId;
use tokio::sync::Notify;

/// The users and rooms marked since the last `take`.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Changed {
    pub(crate) users: HashSet<UserId>,
    pub(crate) rooms: HashSet<(Group, UserId)>,
}

impl Changed {
    pub(crate) fn is_empty(&self) -> bool {
        self.users.is_empty() && self.rooms.is_empty()
    }
}

#[derive(Default)]
pub(crate) struct Changes {
    marked: Mutex<Changed>,
    wake: Notify,
}

impl Changes {
    fn marked(&self) -> std::sync::MutexGuard<'_, Changed> {
        self.marked.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `user`'s sockets on this node changed.
    pub(crate) fn user(&self, user: &UserId) {
        self.marked().users.insert(user.clone());
        self.wake.notify_one();
    }

    /// `user`'s sockets in `room` on this node changed.
    pub(crate) fn room(&self, room: &Group, user: &UserId) {
        self.marked().rooms.insert((room.clone(), user.clone()));
        self.wake.notify_one();
    }

    /// Waits for a mark (one made while nobody waits is kept for the next wait).
    pub(crate) async fn changed(&self) {
        self.wake.notified().await;
    }

    /// Everything marked so far.
    pub(crate) fn take(&self) -> Changed {
        std::mem::take(&mut *self.marked())
    }

    /// Marks again what could not be applied, to be tried with the next changes.
    pub(crate) fn restore(&self, changed: Changed) {
        let mut marked = self.marked();
        marked.users.extend(changed.users);
        marked.rooms.extend(changed.rooms);
    }
}
