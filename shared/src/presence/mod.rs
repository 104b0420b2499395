//! Who is online, cluster-wide. A user is online while any node has a socket of theirs.
//!
//! Each node keeps a set of its online users and a heartbeat; a user's count is the number of
//! nodes that have them. The first node to add a user makes them online, the last to remove
//! them makes them offline. Rooms (Pythia's channels) work the same way, per room: a user is in
//! a room while any node has a socket of theirs in it. A node that stops heartbeating (SIGKILL, partition) is reaped by any
//! other node: its users are removed as if their sockets had closed. Redis scripts make each
//! step atomic and use Redis's own clock, so node clocks never matter.

use std::time::Duration;

use async_trait::async_trait;

use crate::broker::BrokerError;
use crate::event::Group;
use crate::ids::UserId;

#[cfg(any(test, feature = "contract"))]
pub mod contract;
mod memory;
mod redis;

pub use self::memory::MemoryPresence;
pub use self::redis::RedisPresence;

/// Who is online, and in which rooms: a user is online (in a room) while any node has a socket
/// of theirs (in it).
#[async_trait]
pub trait UserPresence: Send + Sync + 'static {
    /// `node` has its first socket of each of `users`, in one step (one round trip); returns
    /// those who were offline everywhere.
    async fn add_all(&self, node: &str, users: &[UserId]) -> Result<Vec<UserId>, BrokerError>;
    /// `node` closed its last socket of each of `users`, in one step; returns those now offline
    /// everywhere.
    async fn remove_all(&self, node: &str, users: &[UserId]) -> Result<Vec<UserId>, BrokerError>;
    /// `add_all` of one user; true if the user was offline everywhere.
    async fn add(&self, node: &str, user: &UserId) -> Result<bool, BrokerError> {
        Ok(!self.add_all(node, std::slice::from_ref(user)).await?.is_empty())
    }
    /// `remove_all` of one user; true if the user is now offline everywhere.
    async fn remove(&self, node: &str, user: &UserId) -> Result<bool, BrokerError> {
        Ok(!self.remove_all(node, std::slice::from_ref(user)).await?.is_empty())
    }
    /// Distinct users online anywhere.
    async fn count(&self) -> Result<usize, BrokerError>;
    /// The users `node` is recorded with (to reconcile after an error).
    async fn members(&self, node: &str) -> Result<Vec<UserId>, BrokerError>;
    /// `user` has a socket in `room` on `node` (Pythia's channel rooms); true if the user was
    /// in that room on no node before.
    async fn join_room(&self, node: &str, room: &Group, user: &UserId) -> Result<bool, BrokerError>;
    /// `user` has no socket left in `room` on `node`; true if they are now in it on no node.
    async fn leave_room(&self, node: &str, room: &Group, user: &UserId) -> Result<bool, BrokerError>;
    /// Users with a socket in `room` on any live node.
    async fn room_members(&self, room: &Group, dead_after: Duration) -> Result<Vec<UserId>, BrokerError>;
}

/// Each user's open sockets per node, for the per-user cap across the cluster.
#[async_trait]
pub trait SocketQuota: Send + Sync + 'static {
    /// Records, for each `(user, count)`, that `user` has `count` sockets open on `node` (0 removes
    /// the record), in one step.
    async fn set_sockets_all(&self, node: &str, counts: &[(UserId, usize)]) -> Result<(), BrokerError>;
    /// `set_sockets_all` of one user.
    async fn set_sockets(&self, node: &str, user: &UserId, count: usize) -> Result<(), BrokerError> {
        self.set_sockets_all(node, &[(user.clone(), count)]).await
    }
    /// `user`'s open sockets on every live node together (the per-user cap, cluster-wide).
    async fn sockets_of(&self, user: &UserId, dead_after: Duration) -> Result<usize, BrokerError>;
    /// A socket's admission against the cluster-wide cap, in one step: if `here` (the user's
    /// sockets on `node`, the new one included) and the user's sockets on the other live nodes
    /// make at most `cap`, records `here` for `node` and returns true; otherwise records nothing.
    async fn admit_socket(
        &self,
        node: &str,
        user: &UserId,
        here: usize,
        cap: usize,
        dead_after: Duration,
    ) -> Result<bool, BrokerError>;
}

/// The live nodes: their heartbeats, their departures (which take their users and rooms with
/// them), and the reports the console reads.
#[async_trait]
pub trait NodeDirectory: Send + Sync + 'static {
    /// Marks `node` alive. True if the node was unknown (first beat, or reaped while it was
    /// unreachable): it must then `add` its users again.
    async fn heartbeat(&self, node: &str) -> Result<bool, BrokerError>;
    /// Removes nodes silent for `dead_after`; returns who went offline, and left rooms, with them.
    async fn reap(&self, dead_after: Duration) -> Result<Departed, BrokerError>;
    /// A node leaving on purpose: its users are removed, as by `reap`.
    async fn leave(&self, node: &str) -> Result<Departed, BrokerError>;
    /// Records `node`'s latest report (JSON, for the console), forgotten after `ttl`.
    async fn report(&self, node: &str, report: &str, ttl: Duration) -> Result<(), BrokerError>;
    /// The latest reports of the live nodes (heard from within `dead_after`).
    async fn reports(&self, dead_after: Duration) -> Result<Vec<String>, BrokerError>;
}

/// All three, as one backend provides them (one process's memory, one Redis).
pub trait Presence: UserPresence + SocketQuota + NodeDirectory {}

impl<T: UserPresence + SocketQuota + NodeDirectory> Presence for T {}

/// Who went away with a node that was reaped or left.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Departed {
    /// Users now offline everywhere.
    pub users: Vec<UserId>,
    /// (room, user) pairs: the user is now in that room on no node.
    pub rooms: Vec<(Group, UserId)>,
}

impl Departed {
    pub(crate) fn extend(&mut self, other: Departed) {
        self.users.extend(other.users);
        self.rooms.extend(other.rooms);
    }
}
