//! The hub: which local sockets are in which group, and the node's subscriptions that follow.
//! It knows sockets, groups and bytes; protocols plug in through `Renderer` (how a publication
//! looks on each wire format) and presence through the users and rooms it marks as changed
//! (`Changes`).
//!
//! * `registry` — the `Hub` itself: the groups, their members and the per-user counts, under
//!   one lock, and what may be asked of them. Its methods live there; the steps below are
//!   functions over a `&Hub`, so that the registry depends on none of them.
//! * `membership` — a socket's place (`Attached`): attach, join, leave, and everything undone on
//!   drop; the first local member of a group makes the node subscribe.
//! * `subscriptions` — the one task that subscribes and unsubscribes, lingering on empty groups.
//! * `dispatch` — the one task that delivers, live and refilled publications alike.
//! * `delivery` — admit under the lock, render and offer outside it.
//! * `refill` — no gap after a reconnect: every group's window delivered before what waited.
//! * `drain` — every socket closed with 1012 over the drain window, by one task.
//! * `link` — one socket's bounded outbox and its backpressure (1013 when full).
//! * `render`, `changes`, `commands` — what the hub exchanges with protocols, presence and its
//!   own tasks.
//!
//! Two groups are the node's own and always subscribed (`pinned`): the control group carries
//! membership and account changes (refilled like any group), which the hub hands to the access
//! task (`crate::access`); the node's canary groups (one per bucket, so one on every Redis
//! Cluster master) carry its own liveness canaries (`crate::canary`), whose last numbers the hub
//! records. Each chat group remembers the ids of the
//! last chat messages it delivered (`saw_message`), so that a reply or read receipt to a message
//! its sender just saw live is accepted before the worker has stored it.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

use shared::broker::{Broker, Inbound};
use shared::event::{Event, Group};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod changes;
mod commands;
mod delivery;
mod dispatch;
mod drain;
mod link;
mod membership;
mod refill;
mod registry;
mod render;
mod subscriptions;

pub(crate) use changes::{Changed, Changes};
pub(crate) use drain::{drain, random_below};
pub(crate) use link::{OfGroup, Outbound, SocketLink};
pub(crate) use membership::Attached;
pub(crate) use registry::Hub;
pub(crate) use render::{Format, Frame, Renderer};

use commands::{SubscriptionRequests, REFILL_QUEUE};
use registry::{GroupEntry, HubState};

/// What a hub reports to, and renders with.
pub(crate) struct Plugs {
    /// How publications look on each wire format.
    pub(crate) renderer: Box<dyn Renderer>,
    /// Where the users and rooms whose sockets changed are marked, for the presence task.
    pub(crate) presence: Arc<Changes>,
    /// Events of the control group (membership and account changes), for the access task.
    pub(crate) access: mpsc::Sender<Event>,
}

/// A hub with its two tasks started on `tasks`, both running until `stop`: the dispatcher (inbox
/// → sockets) and the subscription manager.
#[allow(clippy::too_many_arguments)]
pub(crate) fn start(
    broker: Arc<dyn Broker>,
    inbox: mpsc::Receiver<Inbound>,
    limits: &shared::config::Limits,
    metrics: Arc<crate::metrics::Metrics>,
    plugs: Plugs,
    node_id: &str,
    tasks: &TaskTracker,
    stop: CancellationToken,
) -> Arc<Hub> {
    let (refills_tx, refills_rx) = mpsc::channel(REFILL_QUEUE);
    let canaries = shared::keys::canary_groups(node_id);
    let mut state = HubState::default();
    state.groups.insert(Group::control(), GroupEntry::new(true));
    let hub = Arc::new(Hub {
        state: Mutex::new(state),
        renderer: plugs.renderer,
        manager: SubscriptionRequests::default(),
        refills: refills_tx,
        presence: plugs.presence,
        access: plugs.access,
        access_overflowed: AtomicBool::new(false),
        draining: AtomicBool::new(false),
        in_sync: AtomicBool::new(false),
        pinned: std::iter::once(Group::control()).chain(canaries.iter().cloned()).collect(),
        canary_seen: canaries.iter().map(|_| AtomicU64::new(0)).collect(),
        canaries,
        resyncs: AtomicU64::new(0),
        next_socket: AtomicU64::new(1),
        outbox_frames: limits.outbox_frames,
        outbox_bytes: limits.outbox_bytes,
        max_sockets_per_user: limits.max_sockets_per_user,
        metrics,
    });
    tasks.spawn(dispatch::dispatch(Arc::downgrade(&hub), inbox, refills_rx, stop.clone()));
    tasks.spawn(subscriptions::manage_subscriptions(hub.clone(), broker, stop));
    hub
}
