//! Resuming a socket where its client left off. Every frame rendered from a publication carries
//! its group's `seq` (`Protocol::render_numbered`); a client that reconnects to a single-group
//! socket with `?since=SEQ` first gets exactly the publications after SEQ, in order, from the
//! group's window in Redis, then the live stream, with nothing twice at the seam: the socket
//! joined its group (subscribed) before the window is read, and live frames up to the last one
//! replayed are skipped (`Resume::delivered_upto`). When the window no longer holds the start of
//! the gap, a chat's messages come from the database, where each is stored with its seq
//! (`jobs::StampedJob`), if the gap held nothing but messages. Otherwise (typing or other events
//! gone with the window, a message not yet stored, a counter that started again because Redis
//! lost its data) the client gets one `resync_required` frame naming the group instead, and
//! refetches what it needs.

use axum::extract::ws::Utf8Bytes;
use serde_json::json;
use shared::event::{Envelope, Event, Group, Position};
use shared::ids::UserId;

use crate::app::AppState;
use crate::protocols::Protocol;

/// The most messages a resume reads from the database; a longer gap is `resync_required`.
const MAX_BACKFILL: u64 = 1000;

/// What a resuming socket sends before its live stream.
#[derive(Default)]
pub(crate) struct Resume {
    /// The missed frames, oldest first, or the one `resync_required` frame.
    pub(crate) backlog: Vec<Utf8Bytes>,
    /// Live frames numbered up to this were replayed (or were seen before): skipped once.
    pub(crate) delivered_upto: Option<u64>,
    /// The socket has one group, so the `seq` of its last frame is where it can resume from.
    pub(crate) resumable: bool,
}

/// The frame that says a gap cannot be filled; `seq` is where the live stream stands.
fn resync_required(group: &Group, seq: Option<u64>) -> Resume {
    let frame = json!({"type": "resync_required", "group": group, "seq": seq}).to_string();
    Resume { backlog: vec![Utf8Bytes::from(frame)], delivered_upto: None, resumable: true }
}

/// The frames a socket of `protocol` (its user `user`) missed in `group` after `since`.
pub(crate) async fn resume(app: &AppState, group: &Group, since: &str, protocol: Protocol, user: Option<&UserId>) -> Resume {
    let Ok(since) = since.trim().parse::<u64>() else { return resync_required(group, None) };
    let current = match app.broker.positions(std::slice::from_ref(group)).await {
        Ok(positions) => positions.first().copied().unwrap_or_default(),
        Err(e) => {
            tracing::warn!(error = %e, %group, "resume: position not read");
            return resync_required(group, None);
        }
    };
    if since > current.seq {
        // Numbers the group never reached in this counter's life: the counter started again.
        return resync_required(group, Some(current.seq));
    }
    if since == current.seq {
        return Resume { backlog: Vec::new(), delivered_upto: Some(since), resumable: true };
    }
    let after = Position { epoch: current.epoch, seq: since };
    let read = match app.broker.window_since(&[(group.clone(), after)]).await {
        Ok(mut reads) if !reads.is_empty() => reads.swap_remove(0),
        Ok(_) => return resync_required(group, Some(current.seq)),
        Err(e) => {
            tracing::warn!(error = %e, %group, "resume: window not read");
            return resync_required(group, Some(current.seq));
        }
    };
    if read.current.epoch != current.epoch {
        return resync_required(group, Some(read.current.seq));
    }
    let window: Vec<Envelope> = read.entries.iter().filter_map(|payload| Envelope::decode(payload).ok()).collect();
    let mut missed = Vec::new();
    if !read.complete {
        let first_kept = window.first().and_then(|e| e.seq).unwrap_or(read.current.seq + 1);
        match from_the_database(app, group, current.epoch, since, first_kept).await {
            Some(stored) => missed = stored,
            None => return resync_required(group, Some(read.current.seq)),
        }
    }
    missed.extend(window);
    let mut resume = Resume { backlog: Vec::new(), delivered_upto: Some(since), resumable: true };
    for envelope in &missed {
        let Some(seq) = envelope.seq else { continue };
        resume.delivered_upto = Some(seq.max(resume.delivered_upto.unwrap_or(0)));
        if envelope.except_user.is_some() && envelope.except_user.as_ref() == user {
            continue;
        }
        if let Some(frame) = protocol.render_numbered(envelope) {
            resume.backlog.push(Utf8Bytes::from(frame));
        }
    }
    resume
}

/// A chat's messages numbered after `since` and before `first_kept` (where its window now starts),
/// from the database; `None` unless every number in between is a stored message (a typing
/// indicator, a receipt or an event of the publish API leaves a hole), or when the gap is longer
/// than `MAX_BACKFILL`.
async fn from_the_database(app: &AppState, group: &Group, epoch: u64, since: u64, first_kept: u64) -> Option<Vec<Envelope>> {
    let chat = group.chat_id()?;
    let count = first_kept.checked_sub(since + 1).filter(|n| *n <= MAX_BACKFILL)?;
    let stored = match app.store.chat_messages_between(&chat, epoch, since, first_kept, count as i64).await {
        Ok(stored) => stored,
        Err(e) => {
            tracing::warn!(error = %e, %group, "resume: stored messages not read");
            return None;
        }
    };
    let whole = stored.len() as u64 == count && stored.iter().zip(since + 1..).all(|((seq, _), expected)| *seq == expected);
    whole.then(|| {
        stored
            .into_iter()
            .map(|(seq, message)| Envelope { seq: Some(seq), epoch: Some(epoch), ..Envelope::to_all(Event::ChatMessage(message)) })
            .collect()
    })
}

/// The `seq` a rendered frame starts with (`{"seq":N,...`), if it has one.
pub(crate) fn frame_seq(frame: &str) -> Option<u64> {
    let digits = frame.strip_prefix("{\"seq\":")?;
    let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
    digits[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_seq_a_frame_starts_with() {
        assert_eq!(super::frame_seq(r#"{"seq":42,"type":"message"}"#), Some(42));
        assert_eq!(super::frame_seq(r#"{"seq":7}"#), Some(7));
        assert_eq!(super::frame_seq(r#"{"type":"message","seq":42}"#), None);
        assert_eq!(super::frame_seq(r#"{"seq":"x"}"#), None);
    }
}
