//! The hub: which local sockets are in which group, and the node's subscriptions that follow.
//!
//! * A socket `attach`es (getting its bounded outbox) and `join`s groups. The first local member
//!   of a group makes the node subscribe; a group left empty is unsubscribed after `LINGER`
//!   (so that a reconnecting client does not cause an UNSUBSCRIBE/SUBSCRIBE pair).
//! * One task, the subscription manager, talks to the broker about subscriptions, so that
//!   subscribe and unsubscribe of one group can never overtake each other. Before subscribing a
//!   new group it reads the group's position (`Broker::positions`): where the node's live stream
//!   of that group starts.
//! * No gap after a reconnect: on `Inbound::Reconnected` every group starts *refilling* (live
//!   publications wait in the group), the manager subscribes again to everything, reads each
//!   group's window after the last position delivered (`Broker::window_since`), and the hub
//!   delivers the window, then what waited, in order and each once (a publication at or below
//!   the group's last position is a duplicate and skipped). What a window no longer holds is
//!   counted (`gateway_window_gaps_total`).
//! * `deliver` decodes a publication once, renders it once per wire format present in the group,
//!   and offers the shared bytes to each member's outbox without waiting. A full outbox kicks that
//!   socket (1013); nobody else waits for it.
//! * Each user's first and last socket on this node, and in each room (`join_room`, Pythia's
//!   channels), are reported in order to the presence task (`crate::presence`).
//! * Two groups are the node's own and always subscribed (`pinned`): the control group carries
//!   membership and account changes (refilled like any group), which the hub hands to the access task (`crate::access`) to
//!   re-check the local sockets concerned and `kick` or `evict` them; the node's canary group
//!   carries its own liveness canaries (`crate::canary`), whose last number the hub records.
//! * Each chat group remembers the ids of the last chat messages it delivered (`saw_message`), so
//!   that a reply or read receipt to a message its sender just saw live is accepted before the
//!   worker has stored it.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use shared::broker::{Broker, Inbound, WindowRead};
use shared::event::{Envelope, Event, Group, Position};
use shared::ids::{MessageId, UserId};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::errors::CloseReason;
use crate::metrics::Metrics;
use crate::presence::Change;
use crate::protocols::Protocol;

/// How long an emptied group stays subscribed.
const LINGER: Duration = Duration::from_secs(2);
/// Upper bound on how long a join waits for its subscription to be confirmed.
const JOIN_WAIT: Duration = Duration::from_secs(5);
/// Most subscription changes sent to the broker in one command.
const SUBSCRIBE_BATCH: usize = 1024;
/// Chat message ids a chat group remembers (16 bytes each, only in groups that carry chat
/// messages). Past this many newer messages, the worker has long stored the older ones.
const RECENT_MESSAGES: usize = 256;
/// Live publications a refilling group holds back; past this, the rest is a counted gap.
const REFILL_WAITING: usize = 16 * 1024;
/// Groups whose windows are read in one broker call.
const WINDOW_BATCH: usize = 256;

/// What the hub queues for a socket's task.
#[derive(Debug)]
pub enum Outbound {
    /// A rendered frame, the same bytes for every recipient.
    Frame(Utf8Bytes),
    /// About one group. Boxed, so that a queue slot costs no more than a frame.
    OfGroup(Box<OfGroup>),
}

/// What a socket is told about one of its groups.
#[derive(Debug)]
pub enum OfGroup {
    /// The socket's user may no longer be in this room (removed from a private channel): the
    /// socket leaves it.
    Leave(Group),
    /// A frame with the group it came from, for a socket that keeps a resume token over several
    /// groups (`Attached::track_positions`).
    Frame(Group, Utf8Bytes),
}

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("this user already has {0} open sockets on this node")]
    TooManySockets(usize),
}

/// The hub's view of one socket: what the fan-out path needs, shared with the socket's task.
pub struct SocketLink {
    pub id: u64,
    /// `None` for the Diary guide's tokenless personal socket.
    pub user: Option<UserId>,
    pub protocol: Protocol,
    /// Frames for this socket; its task writes them out. Bounded: see `offer`.
    outbox: flume::Sender<Outbound>,
    /// Bytes waiting in `outbox`, bounded by `outbox_bytes`.
    queued_bytes: AtomicUsize,
    /// The node's total of `queued_bytes` (`gateway_outbox_bytes`).
    queued_total: prometheus_client::metrics::gauge::Gauge,
    outbox_bytes: usize,
    /// Cancelled when the hub wants this socket closed; `kick_code` says why.
    kicked: CancellationToken,
    kick_code: AtomicU16,
    /// Frames go out as `OfGroup::Frame` (with their group).
    tracked: AtomicBool,
}

impl Drop for SocketLink {
    /// What was still queued went with the socket.
    fn drop(&mut self) {
        self.queued_total.dec_by(*self.queued_bytes.get_mut() as i64);
    }
}

impl SocketLink {
    /// Queues a frame of `group` without waiting. A full outbox (frames or bytes) closes the socket
    /// with 1013.
    fn offer(&self, group: &Group, frame: &Utf8Bytes, metrics: &Metrics) -> bool {
        if self.kicked.is_cancelled() {
            return false;
        }
        let len = frame.as_str().len();
        let queued = self.queued_bytes.fetch_add(len, Ordering::Relaxed) + len;
        let outbound = if self.tracked.load(Ordering::Relaxed) {
            Outbound::OfGroup(Box::new(OfGroup::Frame(group.clone(), frame.clone())))
        } else {
            Outbound::Frame(frame.clone())
        };
        if queued > self.outbox_bytes || self.outbox.try_send(outbound).is_err() {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            if !self.outbox.is_disconnected() {
                Metrics::incr(&metrics.slow_closes);
                self.kick(CloseReason::SlowConsumer);
            }
            return false;
        }
        self.queued_total.inc_by(len as i64);
        true
    }

    /// Called by the socket's task for each frame it takes from the outbox.
    pub fn taken(&self, frame: &Utf8Bytes) {
        self.queued_bytes.fetch_sub(frame.as_str().len(), Ordering::Relaxed);
        self.queued_total.dec_by(frame.as_str().len() as i64);
    }

    /// Asks the socket's task to leave `room`; a full outbox closes the socket instead (1013).
    fn offer_leave(&self, room: &Group, metrics: &Metrics) {
        if self.outbox.try_send(Outbound::OfGroup(Box::new(OfGroup::Leave(room.clone())))).is_err()
            && !self.outbox.is_disconnected()
        {
            Metrics::incr(&metrics.slow_closes);
            self.kick(CloseReason::SlowConsumer);
        }
    }

    pub fn kick(&self, reason: CloseReason) {
        // First reason wins.
        let _ = self.kick_code.compare_exchange(0, reason.code(), Ordering::Relaxed, Ordering::Relaxed);
        self.kicked.cancel();
    }

    pub async fn kicked(&self) -> CloseReason {
        self.kicked.cancelled().await;
        CloseReason::from_code(self.kick_code.load(Ordering::Relaxed))
    }
}

struct GroupEntry {
    members: HashMap<u64, Arc<SocketLink>>,
    /// When the last member left; the manager unsubscribes after `LINGER`.
    empty_since: Option<Instant>,
    /// True once the manager has handled this group's subscription.
    subscribed: watch::Sender<bool>,
    /// Ids of the last chat messages delivered in this group, oldest first (empty, and
    /// unallocated, in groups without chat messages).
    recent: VecDeque<MessageId>,
    /// The position of the last publication delivered, or where the node's live stream of the
    /// group started; `None` until the manager has read it.
    last: Option<Position>,
    /// `Some` while the group refills after a reconnect: live publications wait here, decoded.
    waiting: Option<Vec<Envelope>>,
    /// Live publications dropped because `waiting` was full (a gap, counted at the refill).
    overflowed: bool,
    /// The control group's entry: its events go to the access task, not to sockets.
    control: bool,
}

impl GroupEntry {
    fn new(control: bool) -> Self {
        Self {
            members: HashMap::new(),
            empty_since: None,
            subscribed: watch::Sender::new(false),
            recent: VecDeque::new(),
            last: None,
            waiting: None,
            overflowed: false,
            control,
        }
    }
}

#[derive(Default)]
struct HubState {
    groups: HashMap<Group, GroupEntry>,
    sockets_per_user: HashMap<UserId, usize>,
    /// Sockets per (room, user) on this node: who is "in" a Pythia channel room.
    room_sockets: HashMap<(Group, UserId), usize>,
}

enum ManagerCommand {
    Subscribe(Group),
    Reconnected,
}

pub struct Hub {
    /// Never held across an await: every section under it is short and synchronous.
    state: Mutex<HubState>,
    /// To the subscription manager. Unbounded so that it can be sent to under the lock; it holds
    /// at most one entry per join in flight.
    manager: mpsc::UnboundedSender<ManagerCommand>,
    /// Each user's first and last socket on this node, in order, to the presence task.
    presence: mpsc::UnboundedSender<Change>,
    /// Membership and account changes from the control group, to the access task.
    access: mpsc::UnboundedSender<Event>,
    /// False between a pub/sub disconnect and the completed resubscription (`/readyz`).
    in_sync: AtomicBool,
    /// The node's own groups, subscribed for as long as it runs: the control group and its canary.
    pinned: [Group; 2],
    /// The number of the last canary that came back through the node's pub/sub connection.
    canary_seen: AtomicU64,
    /// Completed resubscriptions after a (re)connect.
    resyncs: AtomicU64,
    next_socket: AtomicU64,
    outbox_frames: usize,
    outbox_bytes: usize,
    max_sockets_per_user: usize,
    metrics: Arc<Metrics>,
}

/// A socket's place in the hub. Dropping it leaves every group and frees the user's slot, so
/// an upgrade that never completes leaks nothing.
pub struct Attached {
    hub: Arc<Hub>,
    link: Arc<SocketLink>,
    groups: Vec<Group>,
    /// The subset of `groups` that count as rooms for presence.
    rooms: Vec<Group>,
    /// For a socket that keeps a resume token: each group's last `seq` this socket has been
    /// given (or, before its first frame, where the node's stream stood when it joined).
    positions: Option<BTreeMap<Group, u64>>,
}

impl Hub {
    /// Starts the hub's two tasks: the dispatcher (inbox → sockets) and the subscription manager.
    pub fn start(
        broker: Arc<dyn Broker>,
        inbox: mpsc::Receiver<Inbound>,
        limits: &shared::config::Limits,
        metrics: Arc<Metrics>,
        presence: mpsc::UnboundedSender<Change>,
        access: mpsc::UnboundedSender<Event>,
        node_id: &str,
    ) -> Arc<Self> {
        let (manager_tx, manager_rx) = mpsc::unbounded_channel();
        let mut state = HubState::default();
        state.groups.insert(Group::control(), GroupEntry::new(true));
        let hub = Arc::new(Self {
            state: Mutex::new(state),
            manager: manager_tx,
            presence,
            access,
            in_sync: AtomicBool::new(false),
            pinned: [Group::control(), Group::canary(node_id)],
            canary_seen: AtomicU64::new(0),
            resyncs: AtomicU64::new(0),
            next_socket: AtomicU64::new(1),
            outbox_frames: limits.outbox_frames,
            outbox_bytes: limits.outbox_bytes,
            max_sockets_per_user: limits.max_sockets_per_user,
            metrics,
        });
        tokio::spawn(dispatch(Arc::downgrade(&hub), inbox));
        tokio::spawn(manage_subscriptions(Arc::downgrade(&hub), broker, manager_rx));
        hub
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        // A panic under this lock would be a bug in a few lines of map code; keep serving.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a socket and gives it its outbox.
    pub fn attach(
        self: &Arc<Self>,
        user: Option<UserId>,
        protocol: Protocol,
    ) -> Result<(Attached, flume::Receiver<Outbound>), HubError> {
        if let Some(user) = &user {
            let mut state = self.lock();
            let count = state.sockets_per_user.entry(user.clone()).or_default();
            if *count >= self.max_sockets_per_user {
                return Err(HubError::TooManySockets(*count));
            }
            *count += 1;
            if *count == 1 {
                let _ = self.presence.send(Change::Connected(user.clone()));
            }
        }
        // flume's queue is allocated as frames wait: an idle socket's outbox costs ~100 bytes,
        // where tokio's mpsc allocated a 32-slot block and a cache-padded channel (1.5 KB).
        let (tx, rx) = flume::bounded(self.outbox_frames);
        let link = Arc::new(SocketLink {
            id: self.next_socket.fetch_add(1, Ordering::Relaxed),
            user,
            protocol,
            outbox: tx,
            queued_bytes: AtomicUsize::new(0),
            queued_total: self.metrics.outbox_bytes.clone(),
            outbox_bytes: self.outbox_bytes,
            kicked: CancellationToken::new(),
            kick_code: AtomicU16::new(0),
            tracked: AtomicBool::new(false),
        });
        Ok((Attached { hub: self.clone(), link, groups: Vec::new(), rooms: Vec::new(), positions: None }, rx))
    }

    /// `user`'s sockets open on this node.
    pub fn sockets_of(&self, user: &UserId) -> usize {
        self.lock().sockets_per_user.get(user).copied().unwrap_or(0)
    }

    /// Users with at least one authenticated socket on this node.
    pub fn local_users(&self) -> Vec<UserId> {
        self.lock().sockets_per_user.keys().cloned().collect()
    }

    /// The groups with the most sockets on this node, largest first (for the console).
    pub fn largest_groups(&self, limit: usize) -> Vec<(String, usize)> {
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
    pub fn local_rooms(&self) -> Vec<(Group, UserId)> {
        self.lock().room_sockets.keys().cloned().collect()
    }

    /// True when the node's subscriptions match what its sockets need.
    pub fn in_sync(&self) -> bool {
        self.in_sync.load(Ordering::Relaxed)
    }

    /// Fans one publication out to the local members of `group` (or holds it back while the
    /// group refills).
    fn deliver(&self, group: &Group, payload: &[u8]) {
        Metrics::incr(&self.metrics.publications_in);
        // Decoded before taking the hub's lock: nothing under it waits for JSON parsing.
        let Some(envelope) = decode(group, payload) else { return };
        if *group == self.pinned[1] {
            self.canary_returned(&envelope);
            return;
        }
        let mut state = self.lock();
        let Some(entry) = state.groups.get_mut(group) else { return };
        if let Some(waiting) = &mut entry.waiting {
            if waiting.len() < REFILL_WAITING {
                waiting.push(envelope);
            } else {
                entry.overflowed = true;
            }
            return;
        }
        self.accept(group, entry, envelope);
    }

    /// Delivers one publication unless it was delivered already, and moves the group's position
    /// to it.
    fn accept(&self, group: &Group, entry: &mut GroupEntry, envelope: Envelope) -> bool {
        if let Some(at) = envelope.position() {
            if entry.last.is_some_and(|last| last.epoch == at.epoch && at.seq <= last.seq) {
                return false;
            }
            entry.last = Some(at);
        }
        if entry.control {
            let _ = self.access.send(envelope.event);
            return true;
        }
        if let Some(at_ms) = envelope.at {
            let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
            self.metrics.delivery_latency.observe(now_ms.saturating_sub(at_ms) as f64 / 1000.0);
        }
        Self::fan_out(group, entry, &envelope, &self.metrics);
        true
    }

    /// Records the number of a canary that came back.
    fn canary_returned(&self, envelope: &Envelope) {
        if let Event::Raw { event } = &envelope.event {
            let seen = event.get("canary").and_then(serde_json::Value::as_u64).unwrap_or(0);
            self.canary_seen.fetch_max(seen, Ordering::Relaxed);
        }
    }

    fn fan_out(group: &Group, entry: &mut GroupEntry, envelope: &Envelope, metrics: &Metrics) {
        // One rendering per wire format, made on first need and shared by every member.
        let mut rendered: [Option<Option<Utf8Bytes>>; Protocol::COUNT] = Default::default();
        if let Event::ChatMessage(message) = &envelope.event {
            if entry.recent.len() == RECENT_MESSAGES {
                entry.recent.pop_front();
            }
            entry.recent.push_back(message.message_id);
        }
        for link in entry.members.values() {
            if envelope.except_user.is_some() && envelope.except_user == link.user {
                continue;
            }
            let frame = rendered[link.protocol as usize]
                .get_or_insert_with(|| link.protocol.render_numbered(envelope).map(Utf8Bytes::from));
            if let Some(frame) = frame {
                if link.offer(group, frame, metrics) {
                    Metrics::incr(&metrics.frames_out);
                }
            }
        }
    }

    /// Every group starts refilling (`GroupEntry::waiting`); returns them all. Called before the
    /// manager subscribes again after a reconnect.
    fn start_refill(&self) -> Vec<Group> {
        let mut state = self.lock();
        for entry in state.groups.values_mut() {
            entry.waiting.get_or_insert_with(Vec::new);
        }
        state.groups.keys().cloned().collect()
    }

    /// The refilling groups and the position each was last at (`None`: never positioned).
    fn refilling(&self) -> Vec<(Group, Option<Position>)> {
        let state = self.lock();
        state.groups.iter().filter(|(_, e)| e.waiting.is_some()).map(|(g, e)| (g.clone(), e.last)).collect()
    }

    /// Ends `group`'s refill: delivers what its window held after its position (`read`; `None`
    /// when the window could not be read), then the live publications that waited, in order and
    /// each once. Returns how many publications were delivered from the window.
    fn finish_refill(&self, group: &Group, read: Option<WindowRead>) -> usize {
        let mut state = self.lock();
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
        let from_window: Vec<Envelope> =
            read.map(|r| r.entries).unwrap_or_default().iter().filter_map(|p| decode(group, p)).collect();
        let window_len = from_window.len();
        // Sorted by position (stable: a publication without one keeps its place first), so that
        // the window's and the live copies of one publication meet and the second is skipped
        // as a duplicate; both lists are in order already.
        let mut all: Vec<(usize, Envelope)> = from_window.into_iter().chain(waiting).enumerate().collect();
        all.sort_by_key(|(_, envelope)| envelope.position().unwrap_or_default());
        let mut refilled = 0;
        for (i, envelope) in all {
            if self.accept(group, entry, envelope) && i < window_len {
                refilled += 1;
            }
        }
        if !complete {
            Metrics::incr(&self.metrics.window_gaps);
            tracing::warn!(%group, "publications missed during the reconnect are no longer in the group's window");
        }
        self.metrics.window_refills.inc_by(refilled as u64);
        refilled
    }

    /// Records where the node's live stream of each group starts, for the groups not yet positioned.
    fn set_positions(&self, groups: &[Group], positions: Vec<Position>) {
        let mut state = self.lock();
        for (group, at) in groups.iter().zip(positions) {
            if let Some(entry) = state.groups.get_mut(group) {
                entry.last.get_or_insert(at);
            }
        }
    }

    fn unpositioned(&self, groups: &[Group]) -> Vec<Group> {
        let state = self.lock();
        groups.iter().filter(|g| state.groups.get(*g).is_some_and(|e| e.last.is_none())).cloned().collect()
    }

    /// The node's canary group (`crate::canary`).
    pub fn canary_group(&self) -> &Group {
        &self.pinned[1]
    }

    /// The number of the last canary that came back.
    pub fn canary_seen(&self) -> u64 {
        self.canary_seen.load(Ordering::Relaxed)
    }

    /// How many times the node has subscribed again to everything after a (re)connect.
    pub fn resyncs(&self) -> u64 {
        self.resyncs.load(Ordering::Relaxed)
    }

    /// True when this node delivered the chat message `id` in `group` recently.
    pub fn saw_message(&self, group: &Group, id: &MessageId) -> bool {
        self.lock().groups.get(group).is_some_and(|entry| entry.recent.contains(id))
    }

    /// The users with a socket in `group` on this node.
    pub fn users_in(&self, group: &Group) -> Vec<UserId> {
        let state = self.lock();
        let Some(entry) = state.groups.get(group) else { return Vec::new() };
        let users: HashSet<&UserId> = entry.members.values().filter_map(|link| link.user.as_ref()).collect();
        users.into_iter().cloned().collect()
    }

    /// Closes `user`'s sockets on this node with `reason`: those in `group`, or all of them.
    pub fn kick(&self, user: &UserId, group: Option<&Group>, reason: CloseReason) {
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
    pub fn evict(&self, user: &UserId, room: &Group) {
        let state = self.lock();
        let Some(entry) = state.groups.get(room) else { return };
        for link in entry.members.values().filter(|link| link.user.as_ref() == Some(user)) {
            link.offer_leave(room, &self.metrics);
        }
    }

    /// Removes groups empty for longer than `LINGER`; returns them for unsubscribing.
    fn sweep(&self) -> Vec<Group> {
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

    fn holds(&self, group: &Group) -> bool {
        self.lock().groups.contains_key(group)
    }

    fn mark_subscribed(&self, groups: &[Group]) {
        let state = self.lock();
        for group in groups {
            if let Some(entry) = state.groups.get(group) {
                entry.subscribed.send_replace(true);
            }
        }
    }
}

impl Attached {
    pub fn link(&self) -> &Arc<SocketLink> {
        &self.link
    }

    /// Adds this socket to `group`, and returns once the node is subscribed to it (so that a
    /// publication made after the client saw its socket open is not missed).
    pub async fn join(&mut self, group: Group) {
        if self.groups.contains(&group) {
            return;
        }
        let (mut ready, joined_at) = {
            let mut state = self.hub.lock();
            let entry = state.groups.entry(group.clone()).or_insert_with(|| GroupEntry::new(false));
            entry.members.insert(self.link.id, self.link.clone());
            let joined_at = entry.last;
            entry.empty_since = None;
            let ready = entry.subscribed.subscribe();
            if !*ready.borrow() {
                let _ = self.hub.manager.send(ManagerCommand::Subscribe(group.clone()));
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
    pub fn track_positions(&mut self) {
        self.link.tracked.store(true, Ordering::Relaxed);
        self.positions.get_or_insert_with(BTreeMap::new);
    }

    /// Each group's position, for a socket that keeps them.
    pub fn positions(&self) -> Option<&BTreeMap<Group, u64>> {
        self.positions.as_ref()
    }

    /// Sets `group`'s position (a resuming socket: where its client's token stood, then what was
    /// replayed).
    pub fn set_position(&mut self, group: &Group, seq: u64) {
        if let Some(positions) = &mut self.positions {
            if self.groups.contains(group) {
                positions.insert(group.clone(), seq);
            }
        }
    }

    /// Records that this socket was given `group`'s publication `seq`.
    pub fn advance(&mut self, group: &Group, seq: u64) {
        match self.positions.as_mut().and_then(|p| p.get_mut(group)) {
            Some(position) => *position = (*position).max(seq),
            None => self.set_position(group, seq),
        }
    }

    pub fn in_group(&self, group: &Group) -> bool {
        self.groups.contains(group)
    }

    /// Joins `group` as a room: the socket's user counts as present in it, cluster-wide.
    pub async fn join_room(&mut self, group: Group) {
        self.join(group.clone()).await;
        if self.rooms.contains(&group) {
            return;
        }
        if let Some(user) = &self.link.user {
            let mut state = self.hub.lock();
            let count = state.room_sockets.entry((group.clone(), user.clone())).or_default();
            *count += 1;
            if *count == 1 {
                let _ = self.hub.presence.send(Change::RoomJoined(group.clone(), user.clone()));
            }
        }
        self.rooms.push(group);
    }

    /// Removes this socket from `group` (the subscription lingers, then goes if nobody rejoined).
    pub fn leave(&mut self, group: &Group) {
        self.groups.retain(|g| g != group);
        if let Some(positions) = &mut self.positions {
            positions.remove(group);
        }
        let was_room = self.rooms.contains(group);
        self.rooms.retain(|g| g != group);
        let mut state = self.hub.lock();
        Self::leave_locked(&mut state, &self.link, group);
        if was_room {
            self.hub.leave_room_locked(&mut state, group, self.link.user.as_ref());
        }
    }

    fn leave_locked(state: &mut HubState, link: &SocketLink, group: &Group) {
        if let Some(entry) = state.groups.get_mut(group) {
            entry.members.remove(&link.id);
            if entry.members.is_empty() {
                entry.empty_since = Some(Instant::now());
            }
        }
    }
}

impl Hub {
    fn leave_room_locked(&self, state: &mut HubState, room: &Group, user: Option<&UserId>) {
        let Some(user) = user else { return };
        let key = (room.clone(), user.clone());
        if let Some(count) = state.room_sockets.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                state.room_sockets.remove(&key);
                let _ = self.presence.send(Change::RoomLeft(key.0, key.1));
            }
        }
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        let mut state = self.hub.lock();
        for group in &self.groups {
            Self::leave_locked(&mut state, &self.link, group);
        }
        for room in &self.rooms {
            self.hub.leave_room_locked(&mut state, room, self.link.user.as_ref());
        }
        if let Some(user) = &self.link.user {
            if let Some(count) = state.sockets_per_user.get_mut(user) {
                *count -= 1;
                let _ = self.hub.presence.send(Change::Sockets(user.clone()));
                if *count == 0 {
                    state.sockets_per_user.remove(user);
                    let _ = self.hub.presence.send(Change::Disconnected(user.clone()));
                }
            }
        }
    }
}

/// Inbox → sockets. Never awaits anything but the inbox.
async fn dispatch(hub: std::sync::Weak<Hub>, mut inbox: mpsc::Receiver<Inbound>) {
    while let Some(inbound) = inbox.recv().await {
        let Some(hub) = hub.upgrade() else { return };
        match inbound {
            Inbound::Message { group, payload } => hub.deliver(&group, &payload),
            Inbound::Reconnected => {
                Metrics::incr(&hub.metrics.broker_reconnects);
                let _ = hub.manager.send(ManagerCommand::Reconnected);
            }
            Inbound::Disconnected => hub.in_sync.store(false, Ordering::Relaxed),
        }
    }
}

/// A publication's envelope; one that cannot be decoded is logged and dropped.
fn decode(group: &Group, payload: &[u8]) -> Option<Envelope> {
    Envelope::decode(payload).map_err(|e| tracing::warn!(%group, error = %e, "undecodable publication dropped")).ok()
}

/// The only place that changes the node's subscriptions, one command at a time.
async fn manage_subscriptions(
    hub: std::sync::Weak<Hub>,
    broker: Arc<dyn Broker>,
    mut commands: mpsc::UnboundedReceiver<ManagerCommand>,
) {
    // What the broker has confirmed for this node since the last (re)connect.
    let mut subscribed: HashSet<Group> = HashSet::new();
    let mut sweep = tokio::time::interval(LINGER / 2);
    loop {
        tokio::select! {
            command = commands.recv() => {
                let Some(first) = command else { return };
                let Some(hub) = hub.upgrade() else { return };
                let mut wanted = Vec::new();
                let mut resync = false;
                for command in std::iter::once(first).chain(std::iter::from_fn(|| commands.try_recv().ok())) {
                    match command {
                        ManagerCommand::Subscribe(group) => wanted.push(group),
                        ManagerCommand::Reconnected => resync = true,
                    }
                }
                if resync {
                    subscribed.clear();
                    wanted = hub.start_refill();
                    wanted.extend(hub.pinned.iter().cloned());
                }
                wanted.sort();
                wanted.dedup();
                wanted.retain(|g| !subscribed.contains(g) && (hub.holds(g) || hub.pinned.contains(g)));
                // Where each new group's live stream starts, read before subscribing: whatever is
                // published after it is either delivered live or found in the window later.
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
                if resync && !failed {
                    refill(&hub, broker.as_ref()).await;
                    hub.in_sync.store(true, Ordering::Relaxed);
                    hub.resyncs.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ = sweep.tick() => {
                let Some(hub) = hub.upgrade() else { return };
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

/// Ends every group's refill after a resubscription: reads the windows after each group's
/// position and hands them to the hub. A group never positioned (its position could not be read)
/// has no window to read from: what waited is delivered and the group counted as a gap.
async fn refill(hub: &Hub, broker: &dyn Broker) {
    let groups = hub.refilling();
    let mut refilled = 0;
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
        for ((group, _), window) in reads.iter().zip(windows) {
            refilled += hub.finish_refill(group, window);
        }
        for (group, _) in chunk.iter().filter(|(_, at)| at.is_none()) {
            hub.finish_refill(group, None);
        }
    }
    if refilled > 0 {
        tracing::info!(refilled, "publications missed during the reconnect delivered from the group windows");
    }
}
