//! Durable work for the worker. A job is appended to the jobs stream in the same atomic step as the live
//! publish (see `Broker::publish_and_enqueue`), so what a client saw live is always persisted.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use chrono::{DateTime, Utc};

use crate::event::{ChatMessage, SessionMessage};
use crate::ids::{ChatId, MessageId, UserId};

/// What earns gamification points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivityKind {
    /// A chat message sent, on any app.
    Message,
    /// A task completed (task-events with action `completed`).
    TaskCompleted,
    /// A focus session completed.
    FocusCompleted,
}

impl ActivityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActivityKind::Message => "message",
            ActivityKind::TaskCompleted => "task_completed",
            ActivityKind::FocusCompleted => "focus_completed",
        }
    }
}

/// One activity of one user. `id` makes it count once, however often its job is delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Activity {
    pub id: String,
    pub user_id: UserId,
    pub activity: ActivityKind,
    #[serde(with = "crate::time::rfc3339")]
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Job {
    /// Persist the message (idempotent by id) and move the session's `last_message_at`.
    SessionMessage(SessionMessage),
    /// Persist the chat or direct message (idempotent by id); a chat message moves the chat's
    /// `last_message_at`.
    ChatMessage(ChatMessage),
    /// Record that `user_id` read `message_id`, once.
    ReadReceipt {
        message_id: MessageId,
        chat_id: ChatId,
        user_id: UserId,
        #[serde(with = "crate::time::rfc3339")]
        read_at: DateTime<Utc>,
    },
    /// An activity that is not a message job of its own (Pythia messages, tasks, focus).
    Activity(Activity),
}

impl Job {
    /// The gamification activity this job stands for, if any: every chat message (any app) is
    /// one, keyed by its message id.
    pub fn activity(&self) -> Option<Activity> {
        let message = |id: &crate::ids::MessageId, user: &UserId, at: &DateTime<Utc>| Activity {
            id: format!("message:{id}"),
            user_id: user.clone(),
            activity: ActivityKind::Message,
            at: *at,
        };
        match self {
            Job::SessionMessage(m) => Some(message(&m.message_id, &m.sender_id, &m.created_at)),
            Job::ChatMessage(m) => Some(message(&m.message_id, &m.sender.id, &m.created_at)),
            Job::Activity(a) => Some(a.clone()),
            Job::ReadReceipt { .. } => None,
        }
    }

    pub fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("jobs always serialize"))
    }

    pub fn decode(raw: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(raw)
    }
}

/// One entry read from the jobs stream: its stream id (for the ack) and its raw payload.
#[derive(Debug, Clone, PartialEq)]
pub struct JobEntry {
    pub id: String,
    pub payload: Bytes,
}

/// A job the worker could not apply (undecodable, or refused by the database), kept in the
/// dead-letter stream with why, until an operator replays it (`worker dead-letters --replay ID`).
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Its id in the dead-letter stream (what `--replay` takes).
    pub id: String,
    /// Its id in the jobs stream when it failed.
    pub job_id: String,
    pub payload: Bytes,
    pub error: String,
}
