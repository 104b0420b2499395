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
//!
//! A socket of several groups (Pythia's `/ws`) cannot resume from one number: opened with
//! `?resume=` (empty the first time), each of its numbered frames carries a `"resume"` token, every
//! group's position after that frame (`ResumeToken`). Reconnecting with `?resume=TOKEN` resumes
//! each group from its position the same way, the groups' replays merged in publication order; a
//! group the token does not name (joined since) goes on live.

use std::collections::{BTreeMap, HashMap};

use axum::extract::ws::Utf8Bytes;
use serde_json::json;
use shared::event::{Envelope, Event, Group};
use shared::ids::UserId;

use crate::hub::{Attached, Frame};
use crate::node::Node;
use crate::protocols::{with_leading_fields, Protocol};

/// Where a reconnecting client asks to resume from: `?since=SEQ` (a socket of one group) or
/// `?resume=TOKEN` (a socket of several; empty the first time, to be handed tokens).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub(crate) struct ResumeFrom {
    pub(crate) since: Option<String>,
    pub(crate) resume: Option<String>,
}

/// The most messages a resume reads from the database; a longer gap is `resync_required`.
const MAX_BACKFILL: u64 = 1000;

/// What a resuming socket sends before its live stream.
#[derive(Default)]
pub(crate) struct Resume {
    /// The missed frames, oldest first, or the one `resync_required` frame.
    pub(crate) backlog: Vec<Frame>,
    /// When each of `backlog` was published (ms; 0 for `resync_required`), to merge the replays of
    /// several groups in the order they went out.
    pub(crate) backlog_at: Vec<u64>,
    /// Live frames numbered up to this were replayed (or were seen before): skipped once.
    pub(crate) delivered_upto: Option<u64>,
    /// The socket has one group, so the `seq` of its last frame is where it can resume from.
    pub(crate) resumable: bool,
    /// `delivered_upto` per group, for a socket of several groups that resumed from a token.
    pub(crate) delivered_upto_in: BTreeMap<Group, u64>,
}

/// The frame that says a gap cannot be filled; `seq` is where the live stream stands.
fn resync_required(group: &Group, seq: Option<u64>) -> Resume {
    let frame = json!({"type": "resync_required", "group": group, "seq": seq}).to_string();
    let frame = Frame::plain(Utf8Bytes::from(frame));
    Resume { backlog: vec![frame], backlog_at: vec![0], resumable: true, ..Resume::default() }
}

/// The frames a socket of `protocol` (its user `user`) missed in `group` after `since`; counted
/// in `gateway_resumes_total` by where they came from.
pub(crate) async fn resume(
    app: &Node,
    group: &Group,
    since: &str,
    protocol: Protocol,
    user: Option<&UserId>,
) -> Resume {
    let (resume, from) = replay(app, group, since, protocol, user).await;
    app.metrics.resumed(from);
    resume
}

/// `resume`, and whether the database had to fill the gap (`"database"`, else `"window"`).
async fn replay(
    app: &Node,
    group: &Group,
    since: &str,
    protocol: Protocol,
    user: Option<&UserId>,
) -> (Resume, &'static str) {
    let resync = |seq| (resync_required(group, seq), "resync");
    let Ok(since) = since.trim().parse::<u64>() else { return resync(None) };
    // One read: the group's position and its window after `since` (in its current counter).
    let read = match app.broker.window_after(group, since).await {
        Ok(read) => read,
        Err(e) => {
            tracing::warn!(error = %e, %group, "resume: window not read");
            return resync(None);
        }
    };
    let current = read.current;
    if since > current.seq {
        // Numbers the group never reached in this counter's life: the counter started again.
        return resync(Some(current.seq));
    }
    if since == current.seq {
        return (Resume { delivered_upto: Some(since), resumable: true, ..Resume::default() }, "window");
    }
    let window: Vec<Envelope> = read.entries.iter().filter_map(|p| Envelope::decode(&p.payload).ok()).collect();
    let (mut missed, mut from) = (Vec::new(), "window");
    if !read.complete {
        let first_kept = window.first().and_then(|e| e.seq).unwrap_or(read.current.seq + 1);
        match from_the_database(app, group, current.epoch, since, first_kept).await {
            Some(stored) => (missed, from) = (stored, "database"),
            None => return resync(Some(read.current.seq)),
        }
    }
    missed.extend(window);
    let mut resume = Resume { delivered_upto: Some(since), resumable: true, ..Resume::default() };
    for envelope in &missed {
        let Some(seq) = envelope.seq else { continue };
        resume.delivered_upto = Some(seq.max(resume.delivered_upto.unwrap_or(0)));
        if envelope.except_user.is_some() && envelope.except_user.as_ref() == user {
            continue;
        }
        if let Some(frame) = protocol.render_numbered(envelope) {
            resume.backlog.push(frame);
            resume.backlog_at.push(envelope.at.unwrap_or(0));
        }
    }
    (resume, from)
}

/// A chat's messages numbered after `since` and before `first_kept` (where its window now starts),
/// from the database; `None` unless every number in between is a stored message (a typing
/// indicator, a receipt or an event of the publish API leaves a hole), or when the gap is longer
/// than `MAX_BACKFILL`.
async fn from_the_database(
    app: &Node,
    group: &Group,
    epoch: u64,
    since: u64,
    first_kept: u64,
) -> Option<Vec<Envelope>> {
    let chat = group.chat_id()?;
    let count = first_kept.checked_sub(since + 1).filter(|n| *n <= MAX_BACKFILL)?;
    let stored = match app.store.chat_messages_between(&chat, epoch, since, first_kept, count as i64).await {
        Ok(stored) => stored,
        Err(e) => {
            tracing::warn!(error = %e, %group, "resume: stored messages not read");
            return None;
        }
    };
    let whole =
        stored.len() as u64 == count && stored.iter().zip(since + 1..).all(|((seq, _), expected)| *seq == expected);
    whole.then(|| {
        stored
            .into_iter()
            .map(|(seq, message)| {
                let at = Some(message.created_at.timestamp_millis().max(0) as u64);
                Envelope { seq: Some(seq), epoch: Some(epoch), at, ..Envelope::to_all(Event::ChatMessage(message)) }
            })
            .collect()
    })
}

/// Every group's position on a socket of several groups, compact enough for each frame and a
/// URL: `KEY_SEQ` pairs joined by `.`, the key a 32-bit FNV-1a hash of the group's name and both
/// in base 36 (`1k9x2q_mf3a8b1c.…`, about 16 characters a group).
pub(crate) struct ResumeToken;

impl ResumeToken {
    pub(crate) fn encode(positions: &BTreeMap<Group, u64>) -> String {
        let pairs: Vec<String> =
            positions.iter().map(|(g, seq)| format!("{}_{}", base36(key(g).into()), base36(*seq))).collect();
        pairs.join(".")
    }

    /// Each named group's position, by key; `None` for a token that is not one.
    fn decode(token: &str) -> Option<HashMap<u32, u64>> {
        if token.is_empty() {
            return Some(HashMap::new());
        }
        token
            .split('.')
            .map(|pair| {
                let (key, seq) = pair.split_once('_')?;
                Some((u32::try_from(u64::from_str_radix(key, 36).ok()?).ok()?, u64::from_str_radix(seq, 36).ok()?))
            })
            .collect()
    }
}

fn key(group: &Group) -> u32 {
    group.as_str().bytes().fold(0x811c_9dc5u32, |hash, byte| (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193))
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ASCII digits")
}

/// `frame` with the socket's resume token after its `seq` (`{"seq":N,"resume":"…",…`); a frame
/// without a `seq` as it is.
pub(crate) fn with_token(frame: Frame, positions: Option<&BTreeMap<Group, u64>>) -> Frame {
    let (Some(positions), Some(seq)) = (positions, frame.seq) else { return frame };
    // A numbered frame's bytes start with its `seq` (`with_leading_fields`).
    let Some(rest) = frame.bytes.as_str().strip_prefix(&format!("{{\"seq\":{seq}")) else { return frame };
    let fields = rest.strip_prefix(',').unwrap_or(rest);
    let bytes = with_leading_fields(seq, Some(&ResumeToken::encode(positions)), fields);
    Frame { seq: Some(seq), bytes: Utf8Bytes::from(bytes) }
}

/// What a socket of several groups (`attached`, joined, keeping positions) missed since `token`,
/// in publication order, each frame carrying the token as it stands after it. A token that is not
/// one answers `resync_required` for every group.
pub(crate) async fn resume_groups(
    app: &Node,
    attached: &mut Attached,
    token: &str,
    protocol: Protocol,
    user: Option<&UserId>,
) -> Resume {
    let joined = attached.positions().cloned().unwrap_or_default();
    let groups: Vec<Group> = joined.keys().cloned().collect();
    let Some(named) = ResumeToken::decode(token.trim()) else {
        let backlog = groups.iter().flat_map(|g| resync_required(g, None).backlog).collect();
        return Resume { backlog, ..Resume::default() };
    };
    // Until its replay, a group stands where the token says, not where the node's stream is.
    let from: Vec<(Group, u64)> =
        groups.iter().filter_map(|g| named.get(&key(g)).map(|seq| (g.clone(), *seq))).collect();
    for (group, since) in &from {
        attached.set_position(group, *since);
    }
    let mut replays = Vec::new();
    for (group, since) in from {
        let resumed = resume(app, &group, &since.to_string(), protocol, user).await;
        replays.push((group, resumed));
    }
    // The groups' replays merged in the order their publications went out (each group's own
    // order kept), every frame with the token as it stands after it.
    let mut out = Resume::default();
    let order: Vec<usize> = merged_order(replays.iter().map(|(_, r)| r.backlog_at.as_slice()));
    let mut frames: Vec<std::vec::IntoIter<Frame>> =
        replays.iter_mut().map(|(_, r)| std::mem::take(&mut r.backlog).into_iter()).collect();
    for i in order {
        let Some(frame) = frames[i].next() else { continue };
        match frame.seq {
            Some(seq) => {
                attached.set_position(&replays[i].0, seq);
                out.backlog.push(with_token(frame, attached.positions()));
            }
            None => out.backlog.push(frame),
        }
    }
    for (group, resumed) in replays {
        match resumed.delivered_upto {
            Some(upto) => {
                attached.set_position(&group, upto);
                out.delivered_upto_in.insert(group, upto);
            }
            // resync_required: the client starts over from where the stream stood when it joined.
            None => attached.set_position(&group, joined[&group]),
        }
    }
    out
}

/// Which list to take the next item from, merging lists of publication times (each in its own
/// order) by time; on a tie, the earlier list first.
fn merged_order<'a>(lists: impl Iterator<Item = &'a [u64]>) -> Vec<usize> {
    let lists: Vec<&[u64]> = lists.collect();
    let mut next = vec![0; lists.len()];
    let mut order = Vec::with_capacity(lists.iter().map(|l| l.len()).sum());
    while let Some(i) = (0..lists.len()).filter(|i| next[*i] < lists[*i].len()).min_by_key(|i| lists[*i][next[*i]]) {
        order.push(i);
        next[i] += 1;
    }
    order
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_resume_token_names_each_group_and_its_position() {
        use super::{Group, ResumeToken};
        let one = Group::parse("user:ann").unwrap();
        let two = Group::parse("channel:c1").unwrap();
        let positions = [(one.clone(), 1_796_086_516_042), (two.clone(), 7)].into_iter().collect();
        let token = ResumeToken::encode(&positions);
        assert!(
            token.len() < 40 && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.'),
            "{token}"
        );
        let decoded = ResumeToken::decode(&token).unwrap();
        assert_eq!(
            (decoded.get(&super::key(&one)), decoded.get(&super::key(&two))),
            (Some(&1_796_086_516_042), Some(&7))
        );
        assert_eq!(ResumeToken::decode("").unwrap().len(), 0);
        assert!(ResumeToken::decode("zz").is_none() && ResumeToken::decode("a_b_c").is_none());
    }

    #[test]
    fn replays_merge_by_publication_time_keeping_each_groups_order() {
        let one: &[u64] = &[10, 30, 30, 50];
        let two: &[u64] = &[0, 20, 30, 40];
        assert_eq!(super::merged_order([one, two].into_iter()), [1, 0, 1, 0, 0, 1, 1, 0]);
        // A clock that stepped back inside one group does not reorder that group.
        let late: &[u64] = &[50, 5];
        assert_eq!(super::merged_order([late, &[20u64][..]].into_iter()), [1, 0, 0]);
    }

    #[test]
    fn the_token_follows_a_frames_seq() {
        use super::Frame;
        let positions = [(super::Group::parse("user:ann").unwrap(), 5)].into_iter().collect();
        let numbered = Frame { seq: Some(5), bytes: r#"{"seq":5,"type":"x"}"#.into() };
        let frame = super::with_token(numbered, Some(&positions));
        assert_eq!(frame.seq, Some(5));
        let value: serde_json::Value = serde_json::from_str(frame.bytes.as_str()).unwrap();
        assert_eq!((value["seq"].as_u64(), value["type"].as_str()), (Some(5), Some("x")));
        assert!(value["resume"].as_str().unwrap().ends_with("_5"), "{value}");
        let alone = super::with_token(Frame { seq: Some(5), bytes: r#"{"seq":5}"#.into() }, Some(&positions));
        let value: serde_json::Value = serde_json::from_str(alone.bytes.as_str()).unwrap();
        assert!(value["resume"].is_string(), "{value}");
        let plain = super::with_token(Frame::plain(r#"{"type":"x"}"#.into()), Some(&positions));
        assert_eq!(plain.bytes.as_str(), r#"{"type":"x"}"#);
    }
}
