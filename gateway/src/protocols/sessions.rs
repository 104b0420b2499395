//! Send Buddy session chat (`/ws/sessions/{session_id}/`, sendbuddy.md).
//!
//! Client → server: `{"type":"message","content"}` (1–2000 characters after trimming) and
//! `{"type":"typing","is_typing"}`. Server → client: `message` to the whole session (the
//! sender's own sockets included), `typing` to the other participant only.

use serde::{Deserialize, Serialize};
use shared::event::{Envelope, Event, Group, SessionMessage};
use shared::ids::{MessageId, SessionId, UserId};
use shared::jobs::Job;

use axum::extract::ws::Utf8Bytes;

use super::frame::{client_id, message_text};
use crate::errors::ClientError;
use crate::node::Node;

pub(crate) const MAX_CONTENT_CHARS: usize = 2000;

/// What a client frame asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Message { content: String, client_id: Option<String> },
    Typing { is_typing: bool },
}

/// The frames a Send Buddy client sends (sendbuddy.md).
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Frame {
    Message { content: String, client_message_id: Option<String> },
    Typing { is_typing: bool },
}

pub(crate) fn decode(text: &str) -> Result<Action, ClientError> {
    match super::frame::decode(text)? {
        Frame::Message { content, client_message_id } => Ok(Action::Message {
            content: message_text("content", &content, MAX_CONTENT_CHARS)?.to_owned(),
            client_id: client_id(client_message_id.as_deref())?,
        }),
        Frame::Typing { is_typing } => Ok(Action::Typing { is_typing }),
    }
}

/// The `message` frame; also the shape of each item of the session's history.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = SessionMessage)]
pub(crate) struct MessageFrame<'a> {
    /// Always `message`.
    #[serde(rename = "type")]
    #[schema(value_type = String, example = "message")]
    kind: &'static str,
    #[schema(value_type = String, format = Uuid)]
    message_id: MessageId,
    content: &'a str,
    #[schema(value_type = String)]
    sender_id: &'a UserId,
    sender_name: &'a str,
    /// RFC 3339.
    created_at: String,
}

impl<'a> MessageFrame<'a> {
    pub(crate) fn new(m: &'a SessionMessage) -> Self {
        Self {
            kind: "message",
            message_id: m.message_id,
            content: &m.content,
            sender_id: &m.sender_id,
            sender_name: &m.sender_name,
            created_at: shared::time::format(&m.created_at),
        }
    }
}

#[derive(Serialize)]
struct TypingFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    sender_id: &'a UserId,
    sender_name: &'a str,
    is_typing: bool,
}

pub(crate) fn render(event: &Event) -> Option<String> {
    let json = match event {
        Event::SessionMessage(m) => serde_json::to_string(&MessageFrame::new(m)),
        Event::SessionTyping { sender_id, sender_name, is_typing, .. } => {
            serde_json::to_string(&TypingFrame { kind: "typing", sender_id, sender_name, is_typing: *is_typing })
        }
        _ => return None,
    };
    json.ok()
}

/// One participant's socket in one session.
pub(crate) struct SessionSocket {
    pub(crate) session_id: SessionId,
    pub(crate) group: Group,
    pub(crate) user: UserId,
    /// The user record's display name, read at connect.
    pub(crate) sender_name: String,
}

impl SessionSocket {
    pub(crate) async fn on_text(&self, app: &Node, text: &str) -> Result<Option<Utf8Bytes>, ClientError> {
        let result = match decode(text)? {
            Action::Message { content, client_id } => {
                let message = SessionMessage {
                    message_id: MessageId::new(),
                    session_id: self.session_id,
                    sender_id: self.user.clone(),
                    sender_name: self.sender_name.clone(),
                    content,
                    created_at: shared::time::now(),
                };
                let job = Job::SessionMessage(message.clone()).encode();
                let envelope = Envelope::to_all(Event::SessionMessage(message));
                return super::publish::publish_send(app, render, &self.user, client_id, &self.group, envelope, job)
                    .await;
            }
            Action::Typing { is_typing } => {
                let event = Event::SessionTyping {
                    session_id: self.session_id,
                    sender_id: self.user.clone(),
                    sender_name: self.sender_name.clone(),
                    is_typing,
                };
                app.broker.publish(&self.group, Envelope::to_others(event, &self.user).encode()).await
            }
        };
        result.map(|()| None).map_err(|e| super::publish::publish_failed(app, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::errors::ErrorCode;

    fn code(text: &str) -> ErrorCode {
        decode(text).unwrap_err().code
    }

    #[test]
    fn decodes_the_guide_frames() {
        assert_eq!(
            decode(r#"{"type": "message", "content": "Hello, climbing partner!"}"#).unwrap(),
            Action::Message { content: "Hello, climbing partner!".into(), client_id: None }
        );
        assert_eq!(decode(r#"{"type": "typing", "is_typing": true}"#).unwrap(), Action::Typing { is_typing: true });
        assert_eq!(
            decode(r#"{"type": "message", "content": "hi", "client_message_id": "0b7e-1"}"#).unwrap(),
            Action::Message { content: "hi".into(), client_id: Some("0b7e-1".into()) }
        );
    }

    #[test]
    fn content_is_trimmed_and_counted_in_characters() {
        assert_eq!(
            decode(r#"{"type":"message","content":"  hi  "}"#).unwrap(),
            Action::Message { content: "hi".into(), client_id: None }
        );
        let emoji = "🧗".repeat(2000);
        assert!(decode(&format!(r#"{{"type":"message","content":"{emoji}"}}"#)).is_ok());
        assert_eq!(
            code(&format!(r#"{{"type":"message","content":"{}"}}"#, "a".repeat(2001))),
            ErrorCode::InvalidPayload
        );
        assert_eq!(code(r#"{"type":"message","content":"   "}"#), ErrorCode::InvalidPayload);
        assert_eq!(code(r#"{"type":"message","content":5}"#), ErrorCode::InvalidPayload);
        assert_eq!(code(r#"{"type":"message"}"#), ErrorCode::InvalidPayload);
    }

    #[test]
    fn bad_frames_get_their_codes() {
        assert_eq!(code("{not json"), ErrorCode::InvalidJson);
        assert_eq!(code(r#"{"content":"x"}"#), ErrorCode::UnknownMessageType);
        assert_eq!(code(r#"{"type":"dance"}"#), ErrorCode::UnknownMessageType);
        assert_eq!(code("[1,2]"), ErrorCode::UnknownMessageType);
        assert_eq!(code(r#"{"type":"typing","is_typing":"yes"}"#), ErrorCode::InvalidPayload);
    }
}
