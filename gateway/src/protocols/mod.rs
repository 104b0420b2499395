//! One module per wire protocol. Each decodes its app's client frames into actions, carries them
//! out (publish to a group, reply to the socket), and renders internal events into its app's JSON.
//! The hub calls `Protocol::render` once per wire format per publication.

use axum::extract::ws::Utf8Bytes;
use shared::event::{Envelope, Event};

use crate::errors::ClientError;
use crate::hub::{Attached, Format, Frame, Renderer};
use crate::node::Node;

pub(crate) mod chat;
pub(crate) mod diary;
pub(crate) mod frame;
pub(crate) mod onetask;
#[cfg(test)]
mod properties;
pub(crate) mod publish;
pub(crate) mod pythia;
pub(crate) mod sessions;

/// A wire format. The hub renders each publication once per format present in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
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
    /// The console's live tail of a group (`crate::http::console`): every event, as it crosses Redis.
    Console,
}

impl Protocol {
    /// Number of variants: the size of the hub's per-publication render cache.
    pub(crate) const COUNT: usize = 6;

    /// Every protocol, in the order of their render cache slots.
    pub(crate) const ALL: [Protocol; Protocol::COUNT] =
        [Protocol::Sessions, Protocol::Diary, Protocol::Chat, Protocol::Pythia, Protocol::OneTask, Protocol::Console];

    /// The hub's name for this format: its slot in a publication's render cache.
    pub(crate) const fn format(self) -> Format {
        Format::new(self as u8)
    }

    /// The name metrics label it with.
    pub(crate) fn name(self) -> &'static str {
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
    /// The frame's `seq` is set exactly when its bytes carry one (a frame that is not a JSON object
    /// goes out as it is, unnumbered).
    pub(crate) fn render_numbered(self, envelope: &Envelope) -> Option<Frame> {
        let mut frame = self.render(&envelope.event)?;
        // The console's tail shows which events were traced, by their trace id.
        if let (Protocol::Console, Some(id)) =
            (self, envelope.traceparent.as_deref().and_then(shared::telemetry::trace_id))
        {
            let traced = shared::event::with_leading_fields(&format!("\"trace_id\":\"{id}\""), frame.as_bytes());
            frame = String::from_utf8_lossy(&traced).into_owned();
        }
        Some(match (envelope.seq, frame.strip_prefix('{')) {
            (Some(seq), Some(fields)) => Frame { seq: Some(seq), bytes: with_leading_fields(seq, None, fields).into() },
            _ => Frame::plain(frame.into()),
        })
    }

    /// This format's frame for `event`, or `None` if sockets of this format do not receive it.
    pub(crate) fn render(self, event: &Event) -> Option<String> {
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

/// The one place a server frame's leading fields are written: `{"seq":N,` then, for a socket
/// that keeps a resume token, `"resume":"TOKEN",`, then the frame's own `fields` (its JSON
/// object's text after the opening brace).
pub(crate) fn with_leading_fields(seq: u64, token: Option<&str>, fields: &str) -> String {
    let mut frame = format!("{{\"seq\":{seq}");
    if let Some(token) = token {
        frame.push_str(&format!(",\"resume\":\"{token}\""));
    }
    if !fields.trim_start().starts_with('}') {
        frame.push(',');
    }
    frame.push_str(fields);
    frame
}

/// The hub's renderer: each publication as each protocol's sockets receive it.
pub(crate) struct Wire;

impl Renderer for Wire {
    fn render(&self, format: Format, envelope: &Envelope) -> Option<Frame> {
        let protocol = Protocol::ALL.into_iter().find(|p| p.format() == format)?;
        protocol.render_numbered(envelope)
    }
}

/// The per-socket state of a connected client, by protocol: what its client frames mean.
pub(crate) enum SocketHandler {
    Sessions(sessions::SessionSocket),
    Diary(diary::PersonalSocket),
    Chat(chat::ChatSocket),
    Pythia(pythia::PythiaSocket),
    OneTask(onetask::OneTaskSocket),
}

impl SocketHandler {
    /// The first frame on a new socket, if its protocol has one. Made when the socket starts,
    /// after it joined its groups, so that no later change is missed.
    pub(crate) async fn greeting(&self, app: &Node) -> Option<Utf8Bytes> {
        match self {
            SocketHandler::Pythia(socket) => Some(socket.greeting()),
            SocketHandler::OneTask(socket) => socket.greeting(app).await,
            _ => None,
        }
    }

    /// Handles one text frame. `Ok(Some(frame))` is a direct reply to this socket only.
    /// `attached` is the socket's place in the hub, for protocols whose frames join or leave groups.
    pub(crate) async fn on_text(
        &mut self,
        app: &Node,
        attached: &mut Attached,
        text: &str,
    ) -> Result<Option<Utf8Bytes>, ClientError> {
        use tracing::Instrument;
        // Where a message's trace starts (sampled as `OTEL_TRACES_SAMPLER` says): receiving and
        // decoding the frame; its publication is a child (`publish::publish_send`).
        let span = if shared::telemetry::root_sampled() {
            tracing::info_span!(
                "receive",
                "otel.kind" = "server",
                "network.protocol.name" = "websocket",
                "rtgate.protocol" = self.name(),
                trace_id = tracing::field::Empty,
            )
        } else {
            tracing::Span::none()
        };
        shared::telemetry::mark(&span);
        async move {
            match self {
                SocketHandler::Pythia(socket) => socket.on_text(app, attached, text).await,
                SocketHandler::Sessions(socket) => socket.on_text(app, text).await,
                SocketHandler::Diary(socket) => socket.on_text(app, text).map(Some),
                SocketHandler::Chat(socket) => socket.on_text(app, text).await,
                SocketHandler::OneTask(socket) => socket.on_text(app, text).await.map(|()| None),
            }
        }
        .instrument(span)
        .await
    }

    fn name(&self) -> &'static str {
        match self {
            SocketHandler::Sessions(_) => Protocol::Sessions.name(),
            SocketHandler::Diary(_) => Protocol::Diary.name(),
            SocketHandler::Chat(_) => Protocol::Chat.name(),
            SocketHandler::Pythia(_) => Protocol::Pythia.name(),
            SocketHandler::OneTask(_) => Protocol::OneTask.name(),
        }
    }

    /// The socket's user may no longer be in `room` (see `Hub::evict`): the socket leaves it, and
    /// the frame returned tells the client.
    pub(crate) fn on_evicted(&mut self, attached: &mut Attached, room: &shared::event::Group) -> Option<Utf8Bytes> {
        match self {
            SocketHandler::Pythia(socket) => socket.on_evicted(attached, room),
            _ => {
                attached.leave(room);
                None
            }
        }
    }

    /// The socket closed; last words to the groups it was in.
    pub(crate) async fn on_close(&mut self, app: &Node) {
        if let SocketHandler::Pythia(socket) = self {
            socket.on_close(app).await;
        }
    }
}
