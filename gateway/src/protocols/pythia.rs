//! Pythia conversations (`/ws`, pythia.md).
//!
//! On connect: `connection_established`, then the socket is in the room of every channel the
//! user is a member of, and in `user:{id}` (mentions). Client → server: `join_channel` /
//! `leave_channel` (enter or leave a room without changing membership; private channels need
//! membership), `typing_indicator`, `ping`, `get_online_users` (cluster-wide). Server → client:
//! `new_message` and `message_reaction` (from the messages API), `typing_indicator`,
//! `user_status`, `user_joined` / `user_left`, `mention_notification`. A closing socket clears
//! its user's typing state with a broadcast.

use std::collections::HashSet;

use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;
use shared::event::{ChannelMessage, Envelope, Event, Group};
use shared::ids::{ChannelId, MessageId, UserId};
use shared::store::{ChannelRecord, UserRecord};

use crate::errors::{ClientError, ErrorCode};
use crate::hub::Attached;
use crate::node::Node;

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Join(ChannelId),
    Leave(ChannelId),
    Typing { channel: ChannelId, is_typing: bool },
    Ping,
    OnlineUsers(ChannelId),
}

/// The frames a Pythia client sends (pythia.md).
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Frame {
    JoinChannel { channel_id: Option<String> },
    LeaveChannel { channel_id: Option<String> },
    TypingIndicator { channel_id: Option<String>, is_typing: Option<bool> },
    Ping {},
    GetOnlineUsers { channel_id: Option<String> },
}

/// The frame's channel: a missing or empty one is pythia.md's own `missing_channel_id`.
fn channel_id(raw: Option<String>) -> Result<ChannelId, ClientError> {
    match raw.filter(|raw| !raw.is_empty()) {
        Some(raw) => ChannelId::parse(&raw).map_err(|e| ClientError::invalid_payload(format!("\"channel_id\" {e}"))),
        None => Err(ClientError::new(ErrorCode::MissingChannelId, "channel_id is required")),
    }
}

pub(crate) fn decode(text: &str) -> Result<Action, ClientError> {
    match super::frame::decode(text)? {
        Frame::JoinChannel { channel_id: raw } => Ok(Action::Join(channel_id(raw)?)),
        Frame::LeaveChannel { channel_id: raw } => Ok(Action::Leave(channel_id(raw)?)),
        Frame::TypingIndicator { channel_id: raw, is_typing } => {
            let channel = channel_id(raw)?;
            let is_typing = is_typing.ok_or_else(|| ClientError::invalid_payload("\"is_typing\" is required"))?;
            Ok(Action::Typing { channel, is_typing })
        }
        Frame::Ping {} => Ok(Action::Ping),
        Frame::GetOnlineUsers { channel_id: raw } => Ok(Action::OnlineUsers(channel_id(raw)?)),
    }
}

fn now() -> String {
    shared::time::format(&shared::time::now())
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ChannelMessageUser)]
#[serde(rename_all = "camelCase")]
struct MessageUser<'a> {
    #[schema(value_type = String)]
    id: &'a UserId,
    username: &'a str,
    email: Option<&'a str>,
}

/// `new_message.data` in the guide's camelCase; also each item of a channel's history.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ChannelMessage)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MessageData<'a> {
    #[schema(value_type = String, format = Uuid)]
    id: MessageId,
    content: &'a str,
    #[schema(value_type = String)]
    channel_id: &'a ChannelId,
    #[schema(value_type = String)]
    user_id: &'a UserId,
    /// RFC 3339.
    created_at: String,
    updated_at: String,
    user: MessageUser<'a>,
}

impl<'a> MessageData<'a> {
    pub(crate) fn new(m: &'a ChannelMessage) -> Self {
        let at = shared::time::format(&m.created_at);
        Self {
            id: m.message_id,
            content: &m.content,
            channel_id: &m.channel_id,
            user_id: &m.user_id,
            created_at: at.clone(),
            updated_at: at,
            user: MessageUser { id: &m.user_id, username: &m.username, email: m.email.as_deref() },
        }
    }
}

pub(crate) fn render(event: &Event) -> Option<String> {
    let frame = match event {
        Event::ChannelMessage(m) => json!({"type": "new_message", "data": MessageData::new(m), "timestamp": now()}),
        Event::Reaction { message_id, emoji, user_id, username, added, .. } => json!({
            "type": "message_reaction",
            "message_id": message_id,
            "data": {"emoji": emoji, "user_id": user_id, "username": username, "action": if *added { "add" } else { "remove" }},
            "timestamp": now(),
        }),
        Event::ChannelTyping { channel_id, user_id, is_typing } => json!({
            "type": "typing_indicator", "user_id": user_id, "channel_id": channel_id, "is_typing": is_typing, "timestamp": now(),
        }),
        Event::UserStatus { user_id, online } => json!({
            "type": "user_status", "user_id": user_id, "status": if *online { "online" } else { "offline" }, "timestamp": now(),
        }),
        Event::RoomChange { channel_id, user_id, joined } => json!({
            "type": if *joined { "user_joined" } else { "user_left" }, "user_id": user_id, "channel_id": channel_id, "timestamp": now(),
        }),
        Event::Mention { message } => json!({
            "type": "mention_notification",
            "data": {
                "message_id": message.message_id,
                "channel_id": message.channel_id,
                "content": message.content,
                "from_user_id": message.user_id,
                "from_username": message.username,
            },
            "timestamp": now(),
        }),
        _ => return None,
    };
    Some(frame.to_string())
}

/// True when `user` may see `channel`: public, or private with membership.
pub(crate) fn may_see(channel: &ChannelRecord, user: &UserId) -> bool {
    !channel.private || channel.member_ids.contains(user)
}

fn access_denied(details: &str) -> ClientError {
    ClientError::new(ErrorCode::AccessDenied, "Access denied to channel").with_details(details)
}

/// One user's Pythia socket.
pub(crate) struct PythiaSocket {
    pub(crate) user: UserRecord,
    /// Channels where this socket last said it is typing; cleared with a broadcast on close.
    typing: HashSet<ChannelId>,
}

impl PythiaSocket {
    pub(crate) fn new(user: UserRecord) -> Self {
        Self { user, typing: HashSet::new() }
    }

    /// `connection_established`, the first frame on the socket.
    pub(crate) fn greeting(&self) -> Utf8Bytes {
        let frame = json!({
            "type": "connection_established",
            "user_id": self.user.id,
            "username": self.user.username,
            "timestamp": now(),
        });
        Utf8Bytes::from(frame.to_string())
    }

    /// A channel this user may see, or the error for `failure` (store trouble).
    async fn visible_channel(
        &self,
        app: &Node,
        id: &ChannelId,
        failure: ErrorCode,
    ) -> Result<ChannelRecord, ClientError> {
        match app.store.channel(id).await {
            Ok(Some(channel)) if may_see(&channel, &self.user.id) => Ok(channel),
            Ok(Some(_)) => Err(access_denied("User is not a member of this private channel")),
            Ok(None) => Err(access_denied("No such channel, or not visible to this user")),
            Err(e) => {
                tracing::error!(error = %e, "channel lookup failed");
                Err(ClientError::new(failure, "The server could not complete the request"))
            }
        }
    }

    pub(crate) async fn on_text(
        &mut self,
        app: &Node,
        attached: &mut Attached,
        text: &str,
    ) -> Result<Option<Utf8Bytes>, ClientError> {
        let me = self.user.id.clone();
        let reply = match decode(text)? {
            Action::Ping => json!({"type": "pong", "timestamp": now()}),
            Action::Join(channel) => {
                self.visible_channel(app, &channel, ErrorCode::JoinChannelError).await?;
                broker_reachable(app, ErrorCode::JoinChannelError).await?;
                let group = Group::channel(&channel);
                // The others hear `user_joined` from presence if this is the user's first socket
                // in the room anywhere (`crate::presence`).
                attached.join_room(group).await;
                json!({"type": "channel_joined", "channel_id": channel, "timestamp": now()})
            }
            Action::Leave(channel) => {
                broker_reachable(app, ErrorCode::LeaveChannelError).await?;
                let group = Group::channel(&channel);
                // `user_left` from presence if it was their last socket in the room anywhere.
                attached.leave(&group);
                if self.typing.remove(&channel) {
                    let event =
                        Event::ChannelTyping { channel_id: channel.clone(), user_id: me.clone(), is_typing: false };
                    publish(app, &group, Envelope::to_others(event, &me), ErrorCode::LeaveChannelError).await?;
                }
                json!({"type": "channel_left", "channel_id": channel, "timestamp": now()})
            }
            Action::Typing { channel, is_typing } => {
                let group = Group::channel(&channel);
                if !attached.in_group(&group) {
                    return Err(access_denied("Join the channel before typing in it"));
                }
                let event = Event::ChannelTyping { channel_id: channel.clone(), user_id: me.clone(), is_typing };
                publish(app, &group, Envelope::to_others(event, &me), ErrorCode::TypingIndicatorError).await?;
                if is_typing {
                    self.typing.insert(channel);
                } else {
                    self.typing.remove(&channel);
                }
                return Ok(None);
            }
            Action::OnlineUsers(channel) => {
                self.visible_channel(app, &channel, ErrorCode::GetOnlineUsersError).await?;
                let users =
                    app.presence.room_members(&Group::channel(&channel), crate::presence::DEAD_AFTER).await.map_err(
                        |e| {
                            tracing::warn!(error = %e, "online users lookup failed");
                            ClientError::new(ErrorCode::GetOnlineUsersError, "Could not retrieve online users")
                        },
                    )?;
                json!({"type": "online_users", "channel_id": channel, "users": users, "timestamp": now()})
            }
        };
        Ok(Some(Utf8Bytes::from(reply.to_string())))
    }

    /// Removed from a private channel: out of its room, and the client hears `channel_left` as
    /// if it had left itself (the others hear `user_left` from the membership change).
    pub(crate) fn on_evicted(&mut self, attached: &mut Attached, room: &Group) -> Option<Utf8Bytes> {
        let channel = room.channel_id()?;
        if !attached.in_group(room) {
            return None;
        }
        attached.leave(room);
        self.typing.remove(&channel);
        let frame = json!({"type": "channel_left", "channel_id": channel, "timestamp": now()});
        Some(Utf8Bytes::from(frame.to_string()))
    }

    /// The socket closed: whoever saw this user typing sees them stop.
    pub(crate) async fn on_close(&mut self, app: &Node) {
        for channel in self.typing.drain() {
            let event =
                Event::ChannelTyping { channel_id: channel.clone(), user_id: self.user.id.clone(), is_typing: false };
            let envelope = Envelope::to_others(event, &self.user.id);
            // Nobody is left on this socket to tell; the failure is logged and counted.
            if let Err(e) = app.broker.publish(&Group::channel(&channel), envelope.encode()).await {
                super::publish::publish_failed(app, e);
            }
        }
    }
}

/// Entering or leaving a room takes effect cluster-wide through Redis (the node's subscription,
/// presence, `user_joined`/`user_left`): with Redis away the client hears the action's error.
async fn broker_reachable(app: &Node, failure: ErrorCode) -> Result<(), ClientError> {
    app.broker.ping().await.map_err(|e| {
        super::publish::publish_failed(app, e);
        ClientError::new(failure, "The service is temporarily unavailable; retry")
    })
}

async fn publish(app: &Node, group: &Group, envelope: Envelope, failure: ErrorCode) -> Result<(), ClientError> {
    app.broker.publish(group, envelope.encode()).await.map_err(|e| {
        super::publish::publish_failed(app, e);
        ClientError::new(failure, "The service is temporarily unavailable; retry")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_guide_frames_and_names_missing_channels() {
        assert_eq!(
            decode(r#"{"type":"join_channel","channel_id":"general"}"#).unwrap(),
            Action::Join(ChannelId::parse("general").unwrap())
        );
        assert_eq!(decode(r#"{"type":"ping"}"#).unwrap(), Action::Ping);
        assert_eq!(
            decode(r#"{"type":"typing_indicator","channel_id":"c","is_typing":true}"#).unwrap(),
            Action::Typing { channel: ChannelId::parse("c").unwrap(), is_typing: true }
        );
        for missing in [
            r#"{"type":"join_channel"}"#,
            r#"{"type":"get_online_users","channel_id":""}"#,
            r#"{"type":"leave_channel","channel_id":null}"#,
        ] {
            assert_eq!(decode(missing).unwrap_err().code, ErrorCode::MissingChannelId, "{missing}");
        }
        assert_eq!(decode(r#"{"type":"dance"}"#).unwrap_err().code, ErrorCode::UnknownMessageType);
    }
}
