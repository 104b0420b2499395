//! This node's part in cluster-wide presence.
//!
//! The hub marks the users and rooms whose sockets on this node changed (`crate::hub::Changes`,
//! a set: bounded, and two changes of one user before the task looks are one write). One task
//! applies them to the shared `Presence` store, reading the hub's truth for each and writing
//! only what differs from what it wrote before (`Applied`), beats this node's heartbeat, reaps nodes that stopped beating (their users go offline with them), and
//! reconciles the store with the hub after a Redis error. Whenever a user comes online or goes
//! offline anywhere, `announce` tells the apps that care; whenever a user enters a room where
//! they were on no node (their first socket there: a join or the auto-join at connect) or leaves
//! it everywhere (their last socket: a leave, a disconnect or a node death), `announce_room`
//! tells the room (`user_joined` / `user_left`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use shared::broker::PubSub;
use shared::event::{Envelope, Event, Group};
use shared::ids::UserId;
use shared::presence::{Departed, Presence};
use shared::store::Store;
use tokio_util::sync::CancellationToken;

use crate::hub::{Changed, Changes, Hub};

/// How often this node says it is alive.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(3);
/// Silence after which a node counts as dead. With the heartbeat above, the users of a killed
/// node go offline 10–13 s after its last beat.
pub(crate) const DEAD_AFTER: Duration = Duration::from_secs(10);

/// Tells the apps that a user came online or went offline cluster-wide: Pythia's `user_status`,
/// to every channel the user is a member of ("relevant channels", pythia.md).
pub(crate) struct Announcer {
    pub(crate) broker: Arc<dyn PubSub>,
    pub(crate) store: Store,
}

impl Announcer {
    pub(crate) async fn announce(&self, user: UserId, online: bool) {
        let channels = match self.store.channels_of(&user).await {
            Ok(channels) => channels,
            Err(e) => {
                tracing::warn!(error = %e, %user, "user_status not sent: channel lookup failed");
                return;
            }
        };
        // To the others: a user's own sockets know whether they are connected.
        let event = Envelope::to_others(Event::UserStatus { user_id: user.clone(), online }, &user).encode();
        for channel in channels {
            if let Err(e) = self.broker.publish(&Group::channel(&channel), event.clone()).await {
                tracing::warn!(error = %e, "user_status not sent");
            }
        }
    }

    /// `user_joined` / `user_left` to the others in a channel's room.
    pub(crate) async fn announce_room(&self, room: Group, user: UserId, joined: bool) {
        let Some(channel_id) = room.channel_id() else { return };
        let event = Envelope::to_others(Event::RoomChange { channel_id, user_id: user.clone(), joined }, &user);
        if let Err(e) = self.broker.publish(&room, event.encode()).await {
            tracing::warn!(error = %e, %room, "room change not sent");
        }
    }

    /// Everyone who went away with a node.
    pub(crate) async fn announce_departed(&self, departed: Departed) {
        for (room, user) in departed.rooms {
            self.announce_room(room, user, false).await;
        }
        for user in departed.users {
            self.announce(user, false).await;
        }
    }
}

pub(crate) struct PresenceTask {
    pub(crate) store: Arc<dyn Presence>,
    pub(crate) node: String,
    pub(crate) hub: Weak<Hub>,
    /// What the hub marked as changed (a set bounded by the users and rooms on this node).
    pub(crate) changes: Arc<Changes>,
    pub(crate) announcer: Announcer,
    /// What the store was last told of this node: each user's sockets, and the rooms they are in.
    pub(crate) applied: Applied,
}

/// This node's presence as last written to the store, to write only what changed.
#[derive(Default)]
pub(crate) struct Applied {
    sockets: HashMap<UserId, usize>,
    rooms: HashSet<(Group, UserId)>,
}

impl PresenceTask {
    /// Runs until `stop`; then removes this node (and its users) from the store.
    pub(crate) async fn run(mut self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(HEARTBEAT);
        // After a failed store call the store may disagree with the hub: reconcile on the next beat.
        let mut dirty = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.changes.changed() => dirty |= self.apply_changes().await,
                _ = tick.tick() => {
                    // What a failed write left marked is tried again here at the latest.
                    dirty |= self.apply_changes().await;
                    match self.beat(dirty).await {
                        Ok(()) => dirty = false,
                        Err(e) => {
                            tracing::warn!(error = %e, "presence heartbeat failed");
                            dirty = true;
                        }
                    }
                }
            }
        }
        // Apply what is still marked (the sockets closed by a drain), then leave.
        self.apply_changes().await;
        match self.store.leave(&self.node).await {
            Ok(departed) => self.announcer.announce_departed(departed).await,
            Err(e) => tracing::warn!(error = %e, "presence: leaving failed; peers will reap this node"),
        }
    }

    /// Writes what the hub marked; on a failure, marks it again. True after a failure.
    async fn apply_changes(&mut self) -> bool {
        let changed = self.changes.take();
        if changed.is_empty() {
            return false;
        }
        match self.apply(&changed).await {
            Ok(()) => false,
            Err(e) => {
                tracing::warn!(error = %e, "presence update failed; will retry and reconcile");
                self.changes.restore(changed);
                true
            }
        }
    }

    /// Users who came online first, then rooms, then users who went offline, each kind of user
    /// change in one step of the store.
    async fn apply(&mut self, changed: &Changed) -> Result<(), shared::broker::BrokerError> {
        let Some(hub) = self.hub.upgrade() else { return Ok(()) };
        let (mut arrived, mut recounted, mut gone) = (Vec::new(), Vec::new(), Vec::new());
        for user in &changed.users {
            let (now, before) = (hub.sockets_of(user), self.applied.sockets.get(user).copied().unwrap_or(0));
            match (now, before) {
                // The admission recorded the count itself, before the socket opened.
                (1.., 0) => arrived.push((user.clone(), now)),
                (0, 1..) => gone.push((user.clone(), 0)),
                _ if now != before => recounted.push((user.clone(), now)),
                _ => {}
            }
        }
        // One round trip per kind of change; `applied` moves only once the store has it, so that
        // a failed write is tried again as it was.
        let users: Vec<UserId> = arrived.iter().map(|(user, _)| user.clone()).collect();
        for user in self.store.add_all(&self.node, &users).await? {
            self.announcer.announce(user, true).await;
        }
        self.applied.sockets.extend(arrived);
        self.store.set_sockets_all(&self.node, &recounted).await?;
        self.applied.sockets.extend(recounted);
        self.apply_rooms(&hub, &changed.rooms).await?;
        self.store.set_sockets_all(&self.node, &gone).await?;
        let users: Vec<UserId> = gone.into_iter().map(|(user, _)| user).collect();
        for user in self.store.remove_all(&self.node, &users).await? {
            self.announcer.announce(user, false).await;
        }
        for user in &users {
            self.applied.sockets.remove(user);
        }
        Ok(())
    }

    /// Rooms entered or left on this node: after the users who came online, before those who
    /// went offline (so that a user is online before being in a room, and leaves it before going).
    async fn apply_rooms(
        &mut self,
        hub: &Hub,
        rooms: &HashSet<(Group, UserId)>,
    ) -> Result<(), shared::broker::BrokerError> {
        for (room, user) in rooms {
            let key = (room.clone(), user.clone());
            match (hub.in_room(room, user), self.applied.rooms.contains(&key)) {
                (true, false) => {
                    if self.store.join_room(&self.node, room, user).await? {
                        self.announcer.announce_room(room.clone(), user.clone(), true).await;
                    }
                    self.applied.rooms.insert(key);
                }
                (false, true) => {
                    if self.store.leave_room(&self.node, room, user).await? {
                        self.announcer.announce_room(room.clone(), user.clone(), false).await;
                    }
                    self.applied.rooms.remove(&key);
                }
                _ => {}
            }
        }
        Ok(())
    }

    async fn beat(&mut self, dirty: bool) -> Result<(), shared::broker::BrokerError> {
        let unknown = self.store.heartbeat(&self.node).await?;
        if unknown || dirty {
            self.reconcile().await?;
        }
        let departed = self.store.reap(DEAD_AFTER).await?;
        self.announcer.announce_departed(departed).await;
        Ok(())
    }

    /// Makes the store hold what the hub holds, and `applied` what the store then holds.
    async fn reconcile(&mut self) -> Result<(), shared::broker::BrokerError> {
        let Some(hub) = self.hub.upgrade() else { return Ok(()) };
        let local: HashSet<UserId> = hub.local_users().into_iter().collect();
        self.applied = Applied::default();
        for user in &local {
            let sockets = hub.sockets_of(user);
            self.store.set_sockets(&self.node, user, sockets).await?;
            self.applied.sockets.insert(user.clone(), sockets);
        }
        let recorded: HashSet<UserId> = self.store.members(&self.node).await?.into_iter().collect();
        for user in local.difference(&recorded) {
            if self.store.add(&self.node, user).await? {
                self.announcer.announce(user.clone(), true).await;
            }
        }
        for user in recorded.difference(&local) {
            self.store.set_sockets(&self.node, user, 0).await?;
            if self.store.remove(&self.node, user).await? {
                self.announcer.announce(user.clone(), false).await;
            }
        }
        // Room entries are only added here (a reaped node lost them); stale ones of this node are
        // removed by the next `leave_room` of that socket.
        for (room, user) in hub.local_rooms() {
            if self.store.join_room(&self.node, &room, &user).await? {
                self.announcer.announce_room(room.clone(), user.clone(), true).await;
            }
            self.applied.rooms.insert((room, user));
        }
        Ok(())
    }
}

/// A node id: unique per process, readable in Redis.
pub(crate) fn node_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "node".into());
    format!("{host}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}
