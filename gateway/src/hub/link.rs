//! One socket as the fan-out path sees it, and its outbox: the bounded queue between the hub and
//! the socket's task.
//!
//! Invariants:
//! * `offer` never waits. An outbox is bounded twice, in frames (the flume channel's capacity)
//!   and in bytes (`queued_bytes` against `outbox_bytes`); a frame that fits neither closes the
//!   socket with 1013 (`CloseReason::SlowConsumer`) and counts in `gateway_slow_closes_total`.
//!   Nobody else waits for a slow socket.
//! * `queued_bytes` is what waits in this outbox; the node's total (`gateway_outbox_bytes`) moves
//!   with it and gives back what was left when the socket goes (`Drop`).
//! * A kick is set once, and the first reason given is the one the socket closes with.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::task::Poll;

use futures_util::task::AtomicWaker;
use prometheus_client::metrics::gauge::Gauge;
use shared::event::Group;
use shared::ids::UserId;

use super::render::{Format, Frame};
use crate::errors::CloseReason;
use crate::metrics::Metrics;

/// What the hub queues for a socket's task.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// A rendered frame, the same bytes for every recipient.
    Frame(Frame),
    /// About one group. Boxed, so that a queue slot costs no more than a frame.
    OfGroup(Box<OfGroup>),
}

/// What a socket is told about one of its groups.
#[derive(Debug)]
pub(crate) enum OfGroup {
    /// The socket's user may no longer be in this room (removed from a private channel): the
    /// socket leaves it.
    Leave(Group),
    /// A frame with the group it came from, for a socket that keeps a resume token over several
    /// groups (`Attached::track_positions`).
    Frame(Group, Frame),
}

/// The hub's view of one socket: what the fan-out path needs, shared with the socket's task.
pub(crate) struct SocketLink {
    pub(crate) id: u64,
    /// `None` for the Diary guide's tokenless personal socket (and the console's tail).
    pub(crate) user: Option<UserId>,
    /// Which rendering of a publication this socket receives.
    pub(crate) format: Format,
    /// Frames for this socket; its task writes them out. Bounded: see `offer`.
    outbox: flume::Sender<Outbound>,
    /// Bytes waiting in `outbox`, bounded by `outbox_bytes`.
    queued_bytes: AtomicUsize,
    /// The node's total of `queued_bytes` (`gateway_outbox_bytes`).
    queued_total: Gauge,
    outbox_bytes: usize,
    /// Why the hub wants this socket closed; 0 until then. Set once (`kick`: the first reason
    /// wins). An atomic and one waker rather than a cancellation token: the socket's task polls
    /// this on every wake-up, and a token's lock there cost every frame sent.
    kick_code: AtomicU16,
    /// The task waiting in `kicked` (one at a time: the socket's own).
    kick_waker: AtomicWaker,
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
    /// A link and the receiving end of its outbox (`outbox_frames` and `outbox_bytes` deep).
    pub(super) fn new(
        id: u64,
        user: Option<UserId>,
        format: Format,
        outbox_frames: usize,
        outbox_bytes: usize,
        queued_total: Gauge,
    ) -> (Self, flume::Receiver<Outbound>) {
        // flume's queue is allocated as frames wait: an idle socket's outbox costs ~100 bytes,
        // where tokio's mpsc allocated a 32-slot block and a cache-padded channel (1.5 KB).
        let (outbox, receiver) = flume::bounded(outbox_frames);
        let link = Self {
            id,
            user,
            format,
            outbox,
            queued_bytes: AtomicUsize::new(0),
            queued_total,
            outbox_bytes,
            kick_code: AtomicU16::new(0),
            kick_waker: AtomicWaker::new(),
            tracked: AtomicBool::new(false),
        };
        (link, receiver)
    }

    /// From now on this socket's frames carry their group (`OfGroup::Frame`).
    pub(super) fn track(&self) {
        self.tracked.store(true, Ordering::Relaxed);
    }

    /// Queues a frame of `group` without waiting. A full outbox (frames or bytes) closes the socket
    /// with 1013.
    pub(super) fn offer(&self, group: &Group, frame: &Frame, metrics: &Metrics) -> bool {
        if self.kick_code.load(Ordering::Relaxed) != 0 {
            return false;
        }
        let len = frame.bytes.as_str().len();
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
    pub(crate) fn taken(&self, frame: &Frame) {
        let len = frame.bytes.as_str().len();
        self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
        self.queued_total.dec_by(len as i64);
    }

    /// Asks the socket's task to leave `room`; a full outbox closes the socket instead (1013).
    pub(super) fn offer_leave(&self, room: &Group, metrics: &Metrics) {
        if self.outbox.try_send(Outbound::OfGroup(Box::new(OfGroup::Leave(room.clone())))).is_err()
            && !self.outbox.is_disconnected()
        {
            Metrics::incr(&metrics.slow_closes);
            self.kick(CloseReason::SlowConsumer);
        }
    }

    pub(crate) fn kick(&self, reason: CloseReason) {
        // First reason wins.
        let _ = self.kick_code.compare_exchange(0, reason.code(), Ordering::AcqRel, Ordering::Acquire);
        self.kick_waker.wake();
    }

    /// Resolves, with the reason, once the socket is kicked. For one waiter at a time.
    pub(crate) fn kicked(&self) -> impl Future<Output = CloseReason> + '_ {
        std::future::poll_fn(move |cx| {
            let code = self.kick_code.load(Ordering::Acquire);
            if code != 0 {
                return Poll::Ready(CloseReason::from_code(code));
            }
            self.kick_waker.register(cx.waker());
            // A kick between the load and the registration woke nobody: look again.
            match self.kick_code.load(Ordering::Acquire) {
                0 => Poll::Pending,
                code => Poll::Ready(CloseReason::from_code(code)),
            }
        })
    }
}
