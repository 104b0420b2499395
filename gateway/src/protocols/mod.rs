//! One module per wire protocol. Each decodes its app's client frames into actions, carries them
//! out (publish to a group, reply to the socket), and renders internal events into its app's JSON.
//! The hub calls `Protocol::render` once per wire format per publication.

use axum::extract::ws::Utf8Bytes;
use serde_json::{Map, Value};
use shared::event::{Envelope, Event};

use crate::app::AppState;
use crate::errors::ClientError;
use crate::hub::Attached;

pub mod chat;
pub mod diary;
pub mod onetask;
#[cfg(test)]
mod properties;
pub mod pythia;
pub mod sessions;

/// A wire format. The hub renders each publication once per format present in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Send Buddy session chat (sendbuddy.md).
    Sessions,
    /// The Diary personal socket (diary.md, chat.txt §1.2).
    Diary,
    /// A chat room (chat.txt).
    Chat,
    /// Pythia conversations (pythia.md).
    Pythia,
    /// OneTask notifications, task updates and focus sessions (onetask.md).
    OneTask,
    /// The console's live tail of a group (`crate::console`): every event, as it crosses Redis.
    Console,
}

impl Protocol {
    /// Number of variants: the size of the hub's per-publication render cache.
    pub const COUNT: usize = 6;

    /// Every protocol, in the order of their render cache slots.
    pub const ALL: [Protocol; Protocol::COUNT] =
        [Protocol::Sessions, Protocol::Diary, Protocol::Chat, Protocol::Pythia, Protocol::OneTask, Protocol::Console];

    /// The name metrics label it with.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Sessions => "sessions",
            Protocol::Diary => "diary",
            Protocol::Chat => "chat",
            Protocol::Pythia => "pythia",
            Protocol::OneTask => "onetask",
            Protocol::Console => "console",
        }
    }

    /// This format's frame for a publication, carrying the group's `seq` as its first field when
    /// the broker numbered it (an added field: the guides' clients ignore it; a client that keeps
    /// the last one can resume from it, `crate::resume`).
    pub fn render_numbered(self, envelope: &Envelope) -> Option<String> {
        let frame = self.render(&envelope.event)?;
        match (envelope.seq, frame.strip_prefix('{')) {
            (Some(seq), Some(rest)) => {
                let separator = if rest.trim_start().starts_with('}') { "" } else { "," };
                Some(format!("{{\"seq\":{seq}{separator}{rest}"))
            }
            _ => Some(frame),
        }
    }

    /// This format's frame for `event`, or `None` if sockets of this format do not receive it.
    pub fn render(self, event: &Event) -> Option<String> {
        // The publish API's events reach every socket of the group as they are.
        if let Event::Raw { event } = event {
            return Some(event.to_string());
        }
        match self {
            Protocol::Sessions => sessions::render(event),
            Protocol::Diary => diary::render(event),
            Protocol::Chat => chat::render(event),
            Protocol::Pythia => pythia::render(event),
            Protocol::OneTask => onetask::render(event),
            Protocol::Console => serde_json::to_string(event).ok(),
        }
    }
}

/// The per-socket state of a connected client, by protocol: what its client frames mean.
pub enum SocketHandler {
    Sessions(sessions::SessionSocket),
    Diary(diary::PersonalSocket),
    Chat(chat::ChatSocket),
    Pythia(pythia::PythiaSocket),
    OneTask(onetask::OneTaskSocket),
}

impl SocketHandler {
    /// The first frame on a new socket, if its protocol has one. Made when the socket starts,
    /// after it joined its groups, so that no later change is missed.
    pub async fn greeting(&self, app: &AppState) -> Option<Utf8Bytes> {
        match self {
            SocketHandler::Pythia(socket) => Some(socket.greeting()),
            SocketHandler::OneTask(socket) => socket.greeting(app).await,
            _ => None,
        }
    }

    /// Handles one text frame. `Ok(Some(frame))` is a direct reply to this socket only.
    /// `attached` is the socket's place in the hub, for protocols whose frames join or leave groups.
    pub async fn on_text(
        &mut self,
        app: &AppState,
        attached: &mut Attached,
        text: &str,
    ) -> Result<Option<Utf8Bytes>, ClientError> {
        match self {
            SocketHandler::Pythia(socket) => socket.on_text(app, attached, text).await,
            SocketHandler::Sessions(socket) => socket.on_text(app, text).await,
            SocketHandler::Diary(socket) => socket.on_text(app, text).map(Some),
            SocketHandler::Chat(socket) => socket.on_text(app, text).await,
            SocketHandler::OneTask(socket) => socket.on_text(app, text).await.map(|()| None),
        }
    }

    /// The socket's user may no longer be in `room` (see `Hub::evict`): the socket leaves it, and
    /// the frame returned tells the client.
    pub fn on_evicted(&mut self, attached: &mut Attached, room: &shared::event::Group) -> Option<Utf8Bytes> {
        match self {
            SocketHandler::Pythia(socket) => socket.on_evicted(attached, room),
            _ => {
                attached.leave(room);
                None
            }
        }
    }

    /// The socket closed; last words to the groups it was in.
    pub async fn on_close(&mut self, app: &AppState) {
        if let SocketHandler::Pythia(socket) = self {
            socket.on_close(app).await;
        }
    }
}

/// A client frame parsed as JSON, with its `type`. Shared first step of every protocol: invalid
/// JSON and a missing `type` are answered the same way everywhere.
pub struct ClientFrame {
    pub kind: String,
    pub body: Map<String, Value>,
}

/// Parses a client frame's JSON and refuses what the database could not store: the one
/// place every socket's frames go through first.
pub fn parse_json(text: &str) -> Result<Value, ClientError> {
    let value: Value = serde_json::from_str(text).map_err(|_| ClientError::invalid_json())?;
    if has_nul(&value) {
        return Err(ClientError::invalid_payload(NUL_REFUSED));
    }
    Ok(value)
}

/// Why a frame or body with a NUL character is refused (the same words on sockets and the API).
pub const NUL_REFUSED: &str = "text must not contain NUL characters (\\u0000)";

/// True when any string (or key) in `value` has a NUL character, which PostgreSQL cannot store
/// in text: accepted, such a message would be delivered live and then never persisted.
pub fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

impl ClientFrame {
    pub fn parse(text: &str) -> Result<Self, ClientError> {
        let value = parse_json(text)?;
        let Value::Object(mut body) = value else { return Err(ClientError::unknown_type(None)) };
        match body.remove("type") {
            Some(Value::String(kind)) => Ok(Self { kind, body }),
            _ => Err(ClientError::unknown_type(None)),
        }
    }

    /// A required string field.
    pub fn string(&self, field: &str) -> Result<&str, ClientError> {
        match self.body.get(field) {
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(ClientError::invalid_payload(format!("\"{field}\" must be a string"))),
            None => Err(ClientError::invalid_payload(format!("\"{field}\" is required"))),
        }
    }

    /// An optional string field (absent or `null` is `None`).
    pub fn optional_string(&self, field: &str) -> Result<Option<&str>, ClientError> {
        match self.body.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ClientError::invalid_payload(format!("\"{field}\" must be a string"))),
        }
    }

    /// The object under `field` (chat.txt wraps its payloads in `data`), as a frame of its own.
    pub fn nested(&self, field: &str) -> Result<ClientFrame, ClientError> {
        match self.body.get(field) {
            Some(Value::Object(body)) => Ok(ClientFrame { kind: self.kind.clone(), body: body.clone() }),
            Some(_) => Err(ClientError::invalid_payload(format!("\"{field}\" must be an object"))),
            None => Err(ClientError::invalid_payload(format!("\"{field}\" is required"))),
        }
    }

    /// A required boolean field.
    pub fn boolean(&self, field: &str) -> Result<bool, ClientError> {
        match self.body.get(field) {
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(ClientError::invalid_payload(format!("\"{field}\" must be a boolean"))),
            None => Err(ClientError::invalid_payload(format!("\"{field}\" is required"))),
        }
    }
}

/// A client's own id for a message it sends (`client_message_id`, optional): 1-64 characters of
/// `A-Za-z0-9_-` (a UUID fits). A resend under the same id is not published again
/// (`publish_send`).
pub fn client_message_id(frame: &ClientFrame) -> Result<Option<String>, ClientError> {
    let Some(id) = frame.optional_string("client_message_id")? else { return Ok(None) };
    let valid = (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid {
        return Err(ClientError::invalid_payload(
            "\"client_message_id\" must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'",
        ));
    }
    Ok(Some(id.to_owned()))
}

/// Publishes a message a client sent, with its job. With a `client_message_id`, once per user and
/// id within `GATEWAY_RESEND_WINDOW_SECS`: a resend publishes nothing and is answered, to this
/// socket only, with the first send as this socket's protocol renders it (the same `message_id`).
pub async fn publish_send(
    app: &AppState,
    protocol: Protocol,
    user: &shared::ids::UserId,
    client_id: Option<String>,
    group: &shared::event::Group,
    envelope: Envelope,
    job: bytes::Bytes,
) -> Result<Option<Utf8Bytes>, ClientError> {
    let Some(client_id) = client_id else {
        return app
            .broker
            .publish_and_enqueue(group, envelope.encode(), job)
            .await
            .map(|()| None)
            .map_err(|e| publish_failed(app, e));
    };
    let once = shared::broker::Once { id: format!("{user}:{client_id}"), ttl: app.config.limits.resend_window };
    match app.broker.publish_once(&once, group, envelope.encode(), job).await {
        Ok(None) => Ok(None),
        Ok(Some(first)) => {
            let first = Envelope::decode(&first).map_err(|_| ClientError::unavailable())?;
            Ok(protocol.render(&first.event).map(Utf8Bytes::from))
        }
        Err(e) => Err(publish_failed(app, e)),
    }
}

/// What a client hears when its frame could not be published (Redis away): `unavailable`.
pub fn publish_failed(app: &AppState, error: shared::broker::BrokerError) -> ClientError {
    crate::metrics::Metrics::incr(&app.metrics.publish_failures);
    tracing::warn!(%error, "publish failed");
    ClientError::unavailable()
}

/// Message text: trimmed, then 1..=`max` Unicode scalar values.
pub fn message_text<'a>(field: &str, raw: &'a str, max: usize) -> Result<&'a str, ClientError> {
    let text = raw.trim();
    if text.is_empty() {
        return Err(ClientError::invalid_payload(format!("\"{field}\" must not be empty")));
    }
    if text.chars().count() > max {
        return Err(ClientError::invalid_payload(format!("\"{field}\" must be at most {max} characters")));
    }
    Ok(text)
}
