//! The internal events that cross nodes, and the `Envelope` that carries one through the broker.
//! Readable JSON on purpose: `redis-cli monitor` shows what happens. Each wire protocol renders an
//! `Event` into its own JSON (gateway `protocols/`); nothing here knows any app's shapes.

use std::fmt;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{ChannelId, ChatId, FocusSessionId, MessageId, SessionId, UserId, WorkspaceId};

/// A pub/sub group: one Redis channel, and the set of local sockets the hub delivers it to.
/// Built only through the constructors so that every name has the `kind:id` form of PROTOCOL.md.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Group(String);

impl Group {
    pub fn session(id: &SessionId) -> Self {
        Self(format!("session:{id}"))
    }

    pub fn chat(id: &ChatId) -> Self {
        Self(format!("chat:{id}"))
    }

    pub fn channel(id: &ChannelId) -> Self {
        Self(format!("channel:{id}"))
    }

    pub fn workspace(id: &WorkspaceId) -> Self {
        Self(format!("workspace:{id}"))
    }

    pub fn focus(id: &FocusSessionId) -> Self {
        Self(format!("focus:{id}"))
    }

    /// A group named by a backend (the publish API): `kind:id` with a known kind and a valid id.
    pub fn parse(name: &str) -> Option<Self> {
        let (kind, id) = name.split_once(':')?;
        let known = ["session", "chat", "channel", "user", "workspace", "focus"].contains(&kind);
        let valid = if kind == "session" { SessionId::parse(id).is_ok() } else { UserId::parse(id).is_ok() };
        (known && valid).then(|| Self(name.to_owned()))
    }

    /// The chat of a `chat:{id}` group.
    pub fn chat_id(&self) -> Option<ChatId> {
        self.0.strip_prefix("chat:").and_then(|id| ChatId::parse(id).ok())
    }

    /// The channel of a `channel:{id}` group.
    pub fn channel_id(&self) -> Option<ChannelId> {
        self.0.strip_prefix("channel:").and_then(|id| ChannelId::parse(id).ok())
    }

    pub fn user(id: &UserId) -> Self {
        Self(format!("user:{id}"))
    }

    /// The node-level group every node subscribes to for as long as it runs: membership and
    /// account changes (`Event::MembershipChanged`, `Event::AccountChanged`). No socket joins it.
    pub fn control() -> Self {
        Self("control".to_owned())
    }

    /// `(kind, id)` of a `kind:id` group, e.g. `("chat", "c1")`.
    pub fn kind_and_id(&self) -> Option<(&str, &str)> {
        self.0.split_once(':')
    }

    /// Accepts a name received from the broker or a test (`kind:id`).
    pub fn from_name(name: &str) -> Self {
        Self(name.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A chat message in a Send Buddy session, as accepted by the gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionMessage {
    pub message_id: MessageId,
    pub session_id: SessionId,
    pub sender_id: UserId,
    pub sender_name: String,
    pub content: String,
    #[serde(with = "crate::time::rfc3339")]
    pub created_at: DateTime<Utc>,
}

/// A user as chat.txt's `sender` object shows them: the user record when they connected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserSnapshot {
    pub id: UserId,
    pub username: String,
    pub email: Option<String>,
    pub is_active: bool,
    /// RFC 3339, as on the wire.
    pub created_at: Option<String>,
}

/// A chat message (chat.txt), or a direct message when `recipient_id` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub message_id: MessageId,
    pub chat_id: ChatId,
    pub sender: UserSnapshot,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient_id: Option<UserId>,
    pub content: String,
    pub message_type: String,
    pub parent_message_id: Option<MessageId>,
    #[serde(with = "crate::time::rfc3339")]
    pub created_at: DateTime<Utc>,
}

/// A Pythia channel message, posted through the messages API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelMessage {
    pub message_id: MessageId,
    pub channel_id: ChannelId,
    pub user_id: UserId,
    pub username: String,
    pub email: Option<String>,
    pub content: String,
    #[serde(with = "crate::time::rfc3339")]
    pub created_at: DateTime<Utc>,
}

/// A OneTask notification as delivered: the server API's `notification`, or a gamification
/// event (`achievement_unlocked`, `streak_update`, ...) that is stored as a notification too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub notification_id: i64,
    pub user_id: UserId,
    /// The frame's `type`.
    pub wire_type: String,
    pub title: String,
    pub content: String,
    pub notification_type: String,
    pub related_entity_type: Option<String>,
    /// Keeps the JSON type the backend gave it.
    pub related_entity_id: Option<serde_json::Value>,
    pub data: Option<serde_json::Value>,
    #[serde(with = "crate::time::rfc3339")]
    pub created_at: DateTime<Utc>,
}

/// A OneTask task event from the backend; ids keep their JSON type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskUpdate {
    pub task_id: serde_json::Value,
    pub title: String,
    pub action: String,
    pub workspace_id: serde_json::Value,
    pub actor_id: serde_json::Value,
    pub data: Option<serde_json::Value>,
    #[serde(with = "crate::time::rfc3339")]
    pub timestamp: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FocusStatus {
    Idle,
    Running,
    Paused,
    Completed,
}

impl FocusStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FocusStatus::Idle => "idle",
            FocusStatus::Running => "running",
            FocusStatus::Paused => "paused",
            FocusStatus::Completed => "completed",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [FocusStatus::Idle, FocusStatus::Running, FocusStatus::Paused, FocusStatus::Completed]
            .into_iter()
            .find(|s| s.as_str() == raw)
    }
}

/// A focus timer: while running, `ends_at` says when it runs out; otherwise `remaining_seconds`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FocusState {
    pub status: FocusStatus,
    pub remaining_seconds: i64,
    #[serde(default, with = "crate::time::rfc3339_opt")]
    pub ends_at: Option<DateTime<Utc>>,
    /// How long the timer ran before its current stretch (pauses excluded); with a running
    /// timer's `remaining_seconds - remaining_at(now)`, how long it has run in all.
    #[serde(default)]
    pub ran_seconds: i64,
}

impl FocusState {
    pub fn idle() -> Self {
        Self { status: FocusStatus::Idle, remaining_seconds: 0, ends_at: None, ran_seconds: 0 }
    }

    /// Seconds left at `now` (a running timer counts down; it never goes below zero).
    pub fn remaining_at(&self, now: DateTime<Utc>) -> i64 {
        match (self.status, self.ends_at) {
            (FocusStatus::Running, Some(end)) => ((end - now).num_milliseconds().max(0) + 999) / 1000,
            _ => self.remaining_seconds,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    SessionMessage(SessionMessage),
    SessionTyping {
        session_id: SessionId,
        sender_id: UserId,
        sender_name: String,
        is_typing: bool,
    },
    /// To a chat's group.
    ChatMessage(ChatMessage),
    /// To the recipient's `user:{id}` group.
    DirectMessage(ChatMessage),
    ChatTyping {
        chat_id: ChatId,
        user_id: UserId,
        is_typing: bool,
    },
    ReadReceipt {
        chat_id: ChatId,
        message_id: MessageId,
        user_id: UserId,
    },
    /// Pythia: a message posted to a channel.
    ChannelMessage(ChannelMessage),
    /// Pythia: a reaction added to or removed from a channel message.
    Reaction {
        message_id: MessageId,
        channel_id: ChannelId,
        emoji: String,
        user_id: UserId,
        username: String,
        added: bool,
    },
    /// Pythia: typing in a channel (to the others).
    ChannelTyping {
        channel_id: ChannelId,
        user_id: UserId,
        is_typing: bool,
    },
    /// Pythia: a user came online (first socket anywhere) or went offline (last one).
    UserStatus {
        user_id: UserId,
        online: bool,
    },
    /// Pythia: a user entered a channel's room (`joined`) or left it.
    RoomChange {
        channel_id: ChannelId,
        user_id: UserId,
        joined: bool,
    },
    /// Pythia: the user was mentioned (`@username`) in a channel message.
    Mention {
        message: ChannelMessage,
    },
    /// OneTask: a notification or gamification event, to `user:{id}`.
    Notification(Notification),
    /// OneTask: a task changed, to `workspace:{id}`.
    TaskUpdate(TaskUpdate),
    /// OneTask: the shared focus timer changed (or, with action `state`, is as it is).
    FocusUpdate {
        session_id: FocusSessionId,
        action: String,
        actor_id: Option<UserId>,
        state: FocusState,
    },
    /// The publish API: this JSON object, delivered as-is to every socket of the group.
    Raw {
        event: serde_json::Value,
    },
    /// On the control group: who may be in `group` changed; nodes re-check their sockets in it.
    MembershipChanged {
        group: Group,
    },
    /// On the control group: the user's account changed (e.g. deactivated); nodes re-check it.
    AccountChanged {
        user_id: UserId,
    },
}

/// Where a publication stands in its group's sequence. The broker numbers every publication to a
/// group atomically with publishing it; `epoch` names the counter, which starts again under a new
/// epoch if it was lost (Redis restarted without AOF, a group idle past its counter's expiry, an
/// embedded node restarted). A counter starts at its creation time in milliseconds
/// (`Position::counter_start`), so `seq` never goes back for a group, even across epochs: a
/// client's `since` or "last seen" from an older counter is always below the new counter's
/// numbers, never mistaken for a place in it. So a receiver tells a duplicate (`seq` not above
/// the last) from a gap (same epoch, `seq` above the last plus one) from a new counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct Position {
    /// When the group's counter was created (the broker's clock, microseconds); 0 before any
    /// publication.
    pub epoch: u64,
    pub seq: u64,
}

impl Position {
    /// The `seq` a counter created at `epoch` starts from (its first publication is one more):
    /// the creation time in milliseconds. The Redis publish script does the same in Lua.
    pub fn counter_start(epoch: u64) -> u64 {
        epoch / 1000
    }
}

/// The payload as the broker publishes it: `{"seq":N,"epoch":E,"at":MS,` followed by the rest of
/// the JSON object `payload` (leading fields, so that `redis-cli monitor` shows them first; `at`
/// is when it was published, in milliseconds of the publishing node's clock). The Redis broker's publish
/// script builds the same bytes in Lua; a payload that is not a JSON object is published as it is.
pub fn stamp(position: Position, at_ms: u64, payload: &[u8]) -> Bytes {
    with_leading_fields(&format!("\"seq\":{},\"epoch\":{},\"at\":{at_ms}", position.seq, position.epoch), payload)
}

/// What the broker stamped on a publication: its place in its group's numbering, and when it went
/// out (milliseconds of the publishing node's clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub position: Position,
    pub at: u64,
}

/// The stamp `stamp` (or the Redis publish script) wrote at the front of `payload`, read back
/// where the bytes arrive from the broker, so that a receiver has the numbers beside the bytes;
/// `None` for a payload without one.
pub fn read_stamp(payload: &[u8]) -> Option<Stamp> {
    let mut rest = payload;
    let mut field = |name: &str| -> Option<u64> {
        let after = rest.strip_prefix(name.as_bytes())?;
        let digits = after.iter().take_while(|b| b.is_ascii_digit()).count();
        let value = std::str::from_utf8(&after[..digits]).ok()?.parse().ok()?;
        rest = &after[digits..];
        Some(value)
    };
    let seq = field("{\"seq\":")?;
    let epoch = field(",\"epoch\":")?;
    let at = field(",\"at\":")?;
    Some(Stamp { position: Position { epoch, seq }, at })
}

/// The JSON object `payload` with `fields` (`"name":value,...`) first; a payload that is not an
/// object, as it is.
pub fn with_leading_fields(fields: &str, payload: &[u8]) -> Bytes {
    let Some(rest) = payload.strip_prefix(b"{") else { return Bytes::copy_from_slice(payload) };
    let separator = if rest.trim_ascii_start().starts_with(b"}") { "" } else { "," };
    let mut out = Vec::with_capacity(fields.len() + rest.len() + 2);
    out.push(b'{');
    out.extend_from_slice(fields.as_bytes());
    out.extend_from_slice(separator.as_bytes());
    out.extend_from_slice(rest);
    Bytes::from(out)
}

/// What crosses the broker: one event for one group, and who must not receive it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Set by the broker on publishing (`stamp`); `None` in what a caller hands to the broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// When the broker published it, milliseconds of its clock (`stamp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<u64>,
    /// The sockets of this user are skipped (typing indicators never reach their sender).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub except_user: Option<UserId>,
    /// The W3C trace context of the span that published it, only when that span is sampled
    /// (`crate::telemetry`): an unsampled publication carries nothing more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    pub event: Event,
}

impl Envelope {
    pub fn to_all(event: Event) -> Self {
        Self { seq: None, epoch: None, at: None, except_user: None, traceparent: None, event }
    }

    pub fn to_others(event: Event, sender: &UserId) -> Self {
        Self { seq: None, epoch: None, at: None, except_user: Some(sender.clone()), traceparent: None, event }
    }

    /// The group position the broker stamped on this envelope, if any.
    pub fn position(&self) -> Option<Position> {
        Some(Position { epoch: self.epoch?, seq: self.seq? })
    }

    pub fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("envelopes always serialize"))
    }

    pub fn decode(raw: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes the Redis publish script makes too (see `broker::redis`).
    #[test]
    fn a_stamp_is_read_back_from_the_bytes_it_leads() {
        let position = Position { epoch: 1_796_086_516_000_123, seq: 1_796_086_516_042 };
        let stamped = stamp(position, 1_796_086_531_299, br#"{"event":{"kind":"raw","event":{}}}"#);
        assert_eq!(read_stamp(&stamped), Some(Stamp { position, at: 1_796_086_531_299 }));
        assert_eq!(read_stamp(br#"{"event":{}}"#), None, "not stamped");
        assert_eq!(read_stamp(br#"{"seq":5,"epoch":"x"}"#), None);
        assert_eq!(read_stamp(b"{\"seq\":"), None);
    }

    #[test]
    fn stamps_lead_the_object_and_keep_it_valid() {
        let at = Position { epoch: 7, seq: 42 };
        assert_eq!(
            stamp(at, 1000, br#"{"event":1}"#),
            Bytes::from_static(br#"{"seq":42,"epoch":7,"at":1000,"event":1}"#)
        );
        assert_eq!(stamp(at, 1000, b"{ }"), Bytes::from_static(br#"{"seq":42,"epoch":7,"at":1000 }"#));
        assert_eq!(stamp(at, 1000, b"plain"), Bytes::from_static(b"plain"), "not an object: as it is");
        let envelope =
            Envelope::decode(&stamp(at, 1000, &Envelope::to_all(Event::Raw { event: serde_json::json!({}) }).encode()))
                .unwrap();
        assert_eq!((envelope.position(), envelope.at), (Some(at), Some(1000)));
    }
}
