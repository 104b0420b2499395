//! Durable work for the worker. A job is appended to the jobs stream in the same MULTI as the live
//! publish (see `Broker::publish_and_enqueue`), so what a client saw live is always persisted.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use chrono::{DateTime, Utc};

use crate::event::{ChatMessage, SessionMessage};
use crate::ids::{ChatId, MessageId, UserId};

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
}

impl Job {
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
