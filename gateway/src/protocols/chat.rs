//! Chat rooms (`/api/v1/ws/chat/{chat_id}`, chat.txt). Payloads travel inside `data`.
//!
//! Client → server: `send_message` (1–4000 characters; `message_type` text, image or file;
//! `parent_message_id` of this chat for a thread), `direct_message` (to `recipient_id`'s personal
//! socket; both must be members of `chat_id`), `typing_indicator`, `read_receipt`.
//! Server → client: `new_message` to the chat (sender included), `typing_indicator` to the others,
//! `read_receipt` to the chat, each with the authenticated `user_id`; `new_direct_message` to the
//! recipient's `user:{id}` group.

use serde::{Deserialize, Serialize};
use shared::event::{ChatMessage, Envelope, Event, Group, UserSnapshot};
use shared::ids::{ChatId, MessageId, UserId};
use shared::jobs::Job;

use axum::extract::ws::Utf8Bytes;

use super::frame::{client_id, message_text};
use crate::errors::{ClientError, ErrorCode};
use crate::node::Node;

pub(crate) const MAX_CONTENT_CHARS: usize = 4000;
const MESSAGE_TYPES: [&str; 3] = ["text", "image", "file"];

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Send { content: String, message_type: String, parent: Option<MessageId>, client_id: Option<String> },
    Direct { content: String, message_type: String, recipient: UserId, chat: Option<ChatId>, client_id: Option<String> },
    Typing { is_typing: bool },
    Read { message_id: MessageId },
}

/// The frames a chat client sends (chat.txt §2.1); each payload travels inside `data`.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Frame {
    SendMessage { data: SendData },
    DirectMessage { data: DirectData },
    TypingIndicator { data: TypingFrameData },
    ReadReceipt { data: ReadData },
}

#[derive(Deserialize)]
struct SendData {
    content: String,
    message_type: Option<String>,
    parent_message_id: Option<String>,
    client_message_id: Option<String>,
}

#[derive(Deserialize)]
struct DirectData {
    content: String,
    message_type: Option<String>,
    recipient_id: String,
    chat_id: Option<String>,
    client_message_id: Option<String>,
}

#[derive(Deserialize)]
struct TypingFrameData {
    is_typing: bool,
}

#[derive(Deserialize)]
struct ReadData {
    message_id: String,
}

/// `text` unless given; one of `MESSAGE_TYPES`.
fn message_type(given: Option<String>) -> Result<String, ClientError> {
    match given {
        None => Ok("text".into()),
        Some(t) if MESSAGE_TYPES.contains(&t.as_str()) => Ok(t),
        Some(_) => Err(ClientError::invalid_payload("\"message_type\" must be text, image or file")),
    }
}

fn message_id(field: &str, raw: &str) -> Result<MessageId, ClientError> {
    MessageId::parse(raw).map_err(|_| ClientError::invalid_payload(format!("\"{field}\" must be a message id")))
}

pub(crate) fn decode(text: &str) -> Result<Action, ClientError> {
    match super::frame::decode(text)? {
        Frame::SendMessage { data } => Ok(Action::Send {
            content: message_text("content", &data.content, MAX_CONTENT_CHARS)?.to_owned(),
            message_type: message_type(data.message_type)?,
            parent: data.parent_message_id.as_deref().map(|raw| message_id("parent_message_id", raw)).transpose()?,
            client_id: client_id(data.client_message_id.as_deref())?,
        }),
        Frame::DirectMessage { data } => {
            let recipient = UserId::parse(&data.recipient_id)
                .map_err(|e| ClientError::invalid_payload(format!("\"recipient_id\" {e}")))?;
            let chat = data
                .chat_id
                .as_deref()
                .map(|c| ChatId::parse(c).map_err(|e| ClientError::invalid_payload(format!("\"chat_id\" {e}"))))
                .transpose()?;
            Ok(Action::Direct {
                content: message_text("content", &data.content, MAX_CONTENT_CHARS)?.to_owned(),
                message_type: message_type(data.message_type)?,
                recipient,
                chat,
                client_id: client_id(data.client_message_id.as_deref())?,
            })
        }
        Frame::TypingIndicator { data } => Ok(Action::Typing { is_typing: data.is_typing }),
        Frame::ReadReceipt { data } => Ok(Action::Read { message_id: message_id("message_id", &data.message_id)? }),
    }
}

/// `new_message.data` (chat.txt §2.2 a); also each item of a chat's history.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ChatMessage)]
pub(crate) struct MessageData<'a> {
    #[schema(value_type = String, format = Uuid)]
    id: MessageId,
    #[schema(value_type = String)]
    chat_id: &'a ChatId,
    #[schema(value_type = String)]
    sender_id: &'a UserId,
    content: &'a str,
    message_type: &'a str,
    #[schema(value_type = Option<String>, format = Uuid)]
    parent_message_id: Option<MessageId>,
    /// RFC 3339.
    created_at: String,
    /// Messages are never edited, so this is `created_at`.
    updated_at: String,
    /// The sender as they were when the message was sent: `id`, `username`, `email`,
    /// `is_active`, `created_at`.
    #[schema(value_type = Object)]
    sender: &'a UserSnapshot,
}

impl<'a> MessageData<'a> {
    pub(crate) fn new(m: &'a ChatMessage) -> Self {
        let at = shared::time::format(&m.created_at);
        Self {
            id: m.message_id,
            chat_id: &m.chat_id,
            sender_id: &m.sender.id,
            content: &m.content,
            message_type: &m.message_type,
            parent_message_id: m.parent_message_id,
            created_at: at.clone(),
            updated_at: at,
            sender: &m.sender,
        }
    }
}

#[derive(Serialize)]
struct Wrapped<T: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    data: T,
}

#[derive(Serialize)]
struct TypingData<'a> {
    is_typing: bool,
    user_id: &'a UserId,
}

#[derive(Serialize)]
struct ReceiptData<'a> {
    message_id: MessageId,
    user_id: &'a UserId,
}

/// `new_direct_message`, rendered for whichever socket of the recipient receives it.
pub(crate) fn direct_message_frame(m: &ChatMessage) -> Option<String> {
    serde_json::to_string(&Wrapped { kind: "new_direct_message", data: MessageData::new(m) }).ok()
}

pub(crate) fn render(event: &Event) -> Option<String> {
    let json = match event {
        Event::ChatMessage(m) => serde_json::to_string(&Wrapped { kind: "new_message", data: MessageData::new(m) }),
        Event::DirectMessage(m) => return direct_message_frame(m),
        Event::ChatTyping { user_id, is_typing, .. } => serde_json::to_string(&Wrapped {
            kind: "typing_indicator",
            data: TypingData { is_typing: *is_typing, user_id },
        }),
        Event::ReadReceipt { message_id, user_id, .. } => serde_json::to_string(&Wrapped {
            kind: "read_receipt",
            data: ReceiptData { message_id: *message_id, user_id },
        }),
        _ => return None,
    };
    json.ok()
}

/// One member's socket in one chat.
pub(crate) struct ChatSocket {
    pub(crate) chat_id: ChatId,
    pub(crate) group: Group,
    /// The user record at connect: the `sender` object of what they send.
    pub(crate) sender: UserSnapshot,
}

fn store_unavailable(e: shared::store::StoreError) -> ClientError {
    tracing::error!(error = %e, "database error on a chat frame");
    ClientError::unavailable()
}

impl ChatSocket {
    /// True when `message` belongs to this chat: delivered in it by this node lately (so a
    /// member saw it live, whether or not the worker has stored it yet), or stored in it.
    async fn is_message_of_this_chat(&self, app: &Node, message: &MessageId) -> Result<bool, ClientError> {
        if app.hub.saw_message(&self.group, message) {
            return Ok(true);
        }
        let chat = app.store.chat_of_message(message).await.map_err(store_unavailable)?;
        Ok(chat.as_ref() == Some(&self.chat_id))
    }

    fn message(&self, chat_id: ChatId, content: String, message_type: String) -> ChatMessage {
        ChatMessage {
            message_id: MessageId::new(),
            chat_id,
            sender: self.sender.clone(),
            recipient_id: None,
            content,
            message_type,
            parent_message_id: None,
            created_at: shared::time::now(),
        }
    }

    pub(crate) async fn on_text(&self, app: &Node, text: &str) -> Result<Option<Utf8Bytes>, ClientError> {
        let me = &self.sender.id;
        let published = match decode(text)? {
            Action::Send { content, message_type, parent, client_id } => {
                if let Some(parent) = parent {
                    // A thread stays in its chat.
                    if !self.is_message_of_this_chat(app, &parent).await? {
                        return Err(ClientError::invalid_payload(
                            "\"parent_message_id\" must name a message of this chat",
                        ));
                    }
                }
                let mut message = self.message(self.chat_id.clone(), content, message_type);
                message.parent_message_id = parent;
                let job = Job::ChatMessage(message.clone()).encode();
                let envelope = Envelope::to_all(Event::ChatMessage(message));
                return super::publish::publish_send(app, render, me, client_id, &self.group, envelope, job).await;
            }
            Action::Direct { content, message_type, recipient, chat, client_id } => {
                let chat = chat.unwrap_or_else(|| self.chat_id.clone());
                let sender_in =
                    chat == self.chat_id || app.store.is_chat_member(&chat, me).await.map_err(store_unavailable)?;
                let recipient_in = app.store.is_chat_member(&chat, &recipient).await.map_err(store_unavailable)?;
                if !sender_in || !recipient_in {
                    return Err(ClientError::new(
                        ErrorCode::AccessDenied,
                        "Sender and recipient must both be members of the chat",
                    ));
                }
                let mut message = self.message(chat, content, message_type);
                message.recipient_id = Some(recipient.clone());
                let job = Job::ChatMessage(message.clone()).encode();
                let envelope = Envelope::to_all(Event::DirectMessage(message));
                let group = Group::user(&recipient);
                return super::publish::publish_send(app, render, me, client_id, &group, envelope, job).await;
            }
            Action::Typing { is_typing } => {
                let event = Event::ChatTyping { chat_id: self.chat_id.clone(), user_id: me.clone(), is_typing };
                app.broker.publish(&self.group, Envelope::to_others(event, me).encode()).await
            }
            Action::Read { message_id } => {
                if !self.is_message_of_this_chat(app, &message_id).await? {
                    return Err(ClientError::invalid_payload("\"message_id\" must name a message of this chat"));
                }
                let job = Job::ReadReceipt {
                    message_id,
                    chat_id: self.chat_id.clone(),
                    user_id: me.clone(),
                    read_at: shared::time::now(),
                }
                .encode();
                let event = Event::ReadReceipt { chat_id: self.chat_id.clone(), message_id, user_id: me.clone() };
                app.broker.publish_and_enqueue(&self.group, Envelope::to_all(event).encode(), job).await
            }
        };
        published.map(|()| None).map_err(|e| super::publish::publish_failed(app, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> ErrorCode {
        decode(text).unwrap_err().code
    }

    #[test]
    fn decodes_the_guide_frames() {
        assert_eq!(
            decode(r#"{"type":"send_message","data":{"content":"Your message content","message_type":"text","parent_message_id":null}}"#).unwrap(),
            Action::Send { content: "Your message content".into(), message_type: "text".into(), parent: None, client_id: None }
        );
        assert_eq!(
            decode(r#"{"type":"direct_message","data":{"content":"hi","message_type":"text","recipient_id":"bob","chat_id":"c1"}}"#).unwrap(),
            Action::Direct {
                content: "hi".into(),
                message_type: "text".into(),
                recipient: UserId::parse("bob").unwrap(),
                chat: Some(ChatId::parse("c1").unwrap()),
                client_id: None,
            }
        );
        assert!(matches!(
            decode(r#"{"type":"send_message","data":{"content":"x","client_message_id":"c-1"}}"#).unwrap(),
            Action::Send { client_id: Some(id), .. } if id == "c-1"
        ));
        assert_eq!(
            code(r#"{"type":"send_message","data":{"content":"x","client_message_id":"no spaces"}}"#),
            ErrorCode::InvalidPayload
        );
        assert_eq!(
            decode(r#"{"type":"typing_indicator","data":{"is_typing":true,"user_id":"someone"}}"#).unwrap(),
            Action::Typing { is_typing: true }
        );
    }

    #[test]
    fn bad_fields_are_named() {
        assert_eq!(code(r#"{"type":"send_message"}"#), ErrorCode::InvalidPayload);
        assert_eq!(code(r#"{"type":"send_message","data":"x"}"#), ErrorCode::InvalidPayload);
        assert_eq!(
            code(r#"{"type":"send_message","data":{"content":"x","message_type":"video"}}"#),
            ErrorCode::InvalidPayload
        );
        assert_eq!(
            code(&format!(r#"{{"type":"send_message","data":{{"content":"{}"}}}}"#, "a".repeat(4001))),
            ErrorCode::InvalidPayload
        );
        assert_eq!(
            code(r#"{"type":"send_message","data":{"content":"x","parent_message_id":"nope"}}"#),
            ErrorCode::InvalidPayload
        );
        assert_eq!(code(r#"{"type":"read_receipt","data":{}}"#), ErrorCode::InvalidPayload);
        assert_eq!(
            code(r#"{"type":"direct_message","data":{"content":"x","recipient_id":"a b"}}"#),
            ErrorCode::InvalidPayload
        );
        assert_eq!(code(r#"{"type":"wave"}"#), ErrorCode::UnknownMessageType);
    }
}
