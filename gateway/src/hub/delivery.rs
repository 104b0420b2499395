//! Delivery: what the dispatcher (`super::dispatch`) does with each publication.
//!
//! Invariants:
//! * Only the dispatcher calls these, so a group's publications reach each member in the order
//!   they were admitted, and each once.
//! * Under the hub's lock a publication is only admitted (`admit`: duplicate check, position,
//!   recent message ids) and its group's members taken as a snapshot; it is rendered (once per
//!   wire format present, `super::render`) and offered to each member's outbox outside the
//!   lock, so joins, leaves and other groups never wait for a large broadcast.

use std::sync::Arc;

use shared::broker::Publication;
use shared::event::{Envelope, Event, Group};

use super::link::SocketLink;
use super::registry::{GroupEntry, Hub, Received};
use super::render::{Frame, FORMATS};
use crate::metrics::Metrics;

/// Chat message ids a chat group remembers (16 bytes each, only in groups that carry chat
/// messages). Past this many newer messages, the worker has long stored the older ones.
const RECENT_MESSAGES: usize = 256;
/// Live publications a refilling group holds back; past this, the rest is a counted gap.
const REFILL_WAITING: usize = 16 * 1024;

/// What admitting a publication asks for.
pub(super) enum Admitted {
    /// Delivered before (at or below the group's position): skipped.
    Duplicate,
    /// A control event, handed to the access task.
    ToAccess,
    /// To be offered to the group's members.
    ToMembers,
}

/// A publication decoded, its stamp beside it; one that cannot be decoded is logged and dropped.
pub(super) fn decode(group: &Group, publication: &Publication) -> Option<Received> {
    let envelope = Envelope::decode(&publication.payload)
        .map_err(|e| tracing::warn!(%group, error = %e, "undecodable publication dropped"))
        .ok()?;
    Some(Received { stamp: publication.stamp, envelope })
}

/// Fans one publication out to the local members of `group` (or holds it back while the group
/// refills).
pub(super) fn deliver(hub: &Hub, group: &Group, publication: &Publication) {
    Metrics::incr(&hub.metrics.publications_in);
    // Decoded before taking the hub's lock: nothing under it waits for JSON parsing.
    let Some(received) = decode(group, publication) else { return };
    if group.as_str().starts_with("canary:") {
        if let Some(i) = hub.canaries.iter().position(|canary| canary == group) {
            canary_returned(hub, i, &received.envelope);
            return;
        }
    }
    let members = {
        let mut state = hub.lock();
        let Some(entry) = state.groups.get_mut(group) else { return };
        if let Some(waiting) = &mut entry.waiting {
            if waiting.len() < REFILL_WAITING {
                waiting.push(received);
            } else {
                entry.overflowed = true;
            }
            return;
        }
        match admit(hub, entry, &received) {
            Admitted::ToMembers => entry.snapshot(),
            Admitted::Duplicate | Admitted::ToAccess => return,
        }
    };
    // A sampled publication's trace goes on here, on every node that has members for it.
    let span = match &received.envelope.traceparent {
        Some(traceparent) => shared::telemetry::deliver_span(group, received.envelope.seq, traceparent),
        None => tracing::Span::none(),
    };
    let _in_span = span.enter();
    fan_out(hub, group, &members, &received);
}

/// Under the lock: skips a publication delivered already, moves the group's position to it, and
/// remembers a chat message's id (`saw_message`).
pub(super) fn admit(hub: &Hub, entry: &mut GroupEntry, received: &Received) -> Admitted {
    let envelope = &received.envelope;
    if let Some(at) = received.position() {
        if entry.last.is_some_and(|last| last.epoch == at.epoch && at.seq <= last.seq) {
            return Admitted::Duplicate;
        }
        entry.last = Some(at);
    }
    if entry.control {
        // Never waits: a full queue (the access task stuck on the database) is noted, and
        // the access task then re-checks every socket instead of the events it missed.
        if hub.access.try_send(envelope.event.clone()).is_err() {
            hub.access_overflowed.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        return Admitted::ToAccess;
    }
    if let Event::ChatMessage(message) = &envelope.event {
        if entry.recent.len() == RECENT_MESSAGES {
            entry.recent.pop_front();
        }
        entry.recent.push_back(message.message_id);
    }
    Admitted::ToMembers
}

/// Outside the lock: renders the publication once per wire format present and offers the shared
/// bytes to every member (but the one user an envelope may exclude).
pub(super) fn fan_out(hub: &Hub, group: &Group, members: &[Arc<SocketLink>], received: &Received) {
    let envelope = &received.envelope;
    if let Some(at_ms) = received.stamp.map(|stamp| stamp.at) {
        let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
        hub.metrics.delivery_latency.observe(now_ms.saturating_sub(at_ms) as f64 / 1000.0);
    }
    // One rendering per wire format, made on first need and shared by every member.
    let mut rendered: [Option<Option<Frame>>; FORMATS] = Default::default();
    let mut offered = 0;
    // Only a traced delivery (`deliver`'s span) times its offers; untraced, not even the current
    // span is looked up.
    let span = if shared::telemetry::enabled() { tracing::Span::current() } else { tracing::Span::none() };
    let mut slowest = (!span.is_none()).then_some(std::time::Duration::ZERO);
    for link in members {
        if envelope.except_user.is_some() && envelope.except_user == link.user {
            continue;
        }
        let frame = rendered[link.format.slot()].get_or_insert_with(|| hub.renderer.render(link.format, envelope));
        if let Some(frame) = frame {
            let started = slowest.map(|_| std::time::Instant::now());
            if link.offer(group, frame, &hub.metrics) {
                offered += 1;
            }
            if let (Some(slowest), Some(started)) = (&mut slowest, started) {
                *slowest = (*slowest).max(started.elapsed());
            }
        }
    }
    hub.metrics.frames_out.inc_by(offered);
    if let Some(slowest) = slowest {
        span.record("rtgate.recipients", offered);
        span.record("rtgate.renders", rendered.iter().filter(|r| r.is_some()).count());
        span.record("rtgate.slowest_offer_us", slowest.as_micros() as u64);
    }
}

/// Records the number of a canary that came back through canary group `i`.
fn canary_returned(hub: &Hub, i: usize, envelope: &Envelope) {
    if let Event::Raw { event } = &envelope.event {
        let seen = event.get("canary").and_then(serde_json::Value::as_u64).unwrap_or(0);
        hub.canary_seen[i].fetch_max(seen, std::sync::atomic::Ordering::Relaxed);
    }
}
