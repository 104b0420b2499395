//! The socket actor: one task owns one socket. A `select!` over the client's frames, the outbox
//! the hub fills, the hub's kick, drain, the token's expiry and the heartbeat. Generic over
//! `Sink`/`Stream` so that a test can drive it with channels.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::time::Instant;

use super::rate::TokenBucket;
use super::seams::Seams;
use crate::errors::{ClientError, CloseReason, ErrorCode};
use crate::hub::{random_below, Attached, Frame, Outbound, SocketLink};
use crate::metrics::Metrics;
use crate::node::Node;
use crate::protocols::frame::Parsed;
use crate::protocols::SocketHandler;

/// How a connection ends.
enum Ended {
    /// We close with this code and reason.
    Close(CloseReason),
    /// The peer closed or the connection broke: nothing left to say.
    Gone,
}

/// Everything a connected socket needs besides the socket itself.
pub(crate) struct Connection {
    pub(crate) app: Node,
    /// The socket's wire protocol (its metrics label).
    pub(crate) protocol: crate::protocols::Protocol,
    pub(crate) attached: Attached,
    pub(crate) outbox: flume::Receiver<Outbound>,
    pub(crate) handler: SocketHandler,
    /// The token's `exp` (seconds since the epoch); the socket closes with 4003 then.
    pub(crate) expires_at: Option<i64>,
    /// What a resuming client missed, sent before the live stream (`crate::resume`).
    pub(crate) resume: crate::resume::Resume,
}

/// When a token with this `exp` runs out. Saturating: a token's `exp` is whatever its issuer
/// wrote (`i64::MAX` included), and no value of it may panic the socket task.
fn instant_of(exp: i64) -> Instant {
    let left = exp.saturating_sub(chrono::Utc::now().timestamp()).max(0) as u64;
    let now = Instant::now();
    now.checked_add(Duration::from_secs(left)).unwrap_or_else(far_future).min(far_future())
}

/// Sends one frame, giving up if the socket is told to stop meanwhile (`stopped`: a slow reader
/// must not pin its task in `send` forever).
async fn send<W>(
    tx: &mut W,
    message: Message,
    stopped: Pin<&mut impl Future<Output = CloseReason>>,
) -> Result<(), Ended>
where
    W: Sink<Message, Error = axum::Error> + Unpin,
{
    tokio::select! {
        biased;
        reason = stopped => Err(Ended::Close(reason)),
        sent = tx.send(message) => sent.map_err(|_| Ended::Gone),
    }
}

/// How a read error ends the connection: a frame over the limit is answered 1009, a protocol
/// violation 1002, text that is not UTF-8 1007 (RFC 6455 §7.4); a broken connection has no one
/// left to tell.
fn read_error(error: axum::Error) -> Ended {
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    use tokio_tungstenite::tungstenite::Error;
    match error.into_inner().downcast::<Error>().map(|e| *e) {
        Ok(Error::Capacity(_)) => Ended::Close(CloseReason::FrameTooBig),
        Ok(Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => Ended::Gone,
        Ok(Error::Protocol(_)) => Ended::Close(CloseReason::ProtocolError),
        Ok(Error::Utf8(_)) => Ended::Close(CloseReason::InvalidData),
        _ => Ended::Gone,
    }
}

/// Why the socket must close from outside: the hub kicks it, or the node drains. Made once per
/// socket and polled by every wait (made anew per frame, it added and removed two waiters under
/// the tokens' locks for every frame sent). Never polled again once it has resolved: each wait
/// that sees it resolve ends the socket.
async fn stop_signal(link: &SocketLink) -> CloseReason {
    // A drain too comes as a kick (`crate::hub::drain`): one waker, no lock, per wake-up.
    link.kicked().await
}

/// A client's frame as the actor reads it: `Ok(Some(text))` for the protocol, `Ok(None)` for
/// nothing to do (a ping or pong), or how the socket ends.
async fn text_of<W>(
    incoming: Option<Result<Message, axum::Error>>,
    tx: &mut W,
    grace: Duration,
) -> Result<Option<Utf8Bytes>, Ended>
where
    W: Sink<Message, Error = axum::Error> + Unpin,
{
    match incoming {
        None => Err(Ended::Gone),
        Some(Err(e)) => Err(read_error(e)),
        Some(Ok(Message::Text(text))) => Ok(Some(text)),
        Some(Ok(Message::Binary(_))) => Err(Ended::Close(CloseReason::BinaryFrame)),
        // Pings are answered by the WebSocket layer; a pong only proves liveness.
        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(None),
        Some(Ok(Message::Close(_))) => {
            // The WebSocket layer queued the close reply; flush it.
            let _ = tokio::time::timeout(grace, tx.close()).await;
            Err(Ended::Gone)
        }
    }
}

/// What the socket's task owns besides the socket itself and its stop signal.
struct Actor<'a> {
    app: &'a Node,
    link: &'a SocketLink,
    attached: Attached,
    handler: SocketHandler,
    bucket: TokenBucket,
    seams: Seams,
}

impl Actor<'_> {
    /// A client's text frame: rate-limited, a token refresh understood here (moving `expires`),
    /// the rest to the protocol. The reply to send, or how the socket ends.
    async fn on_text(&mut self, text: &str, expires: &mut Instant) -> Result<Option<Utf8Bytes>, Ended> {
        Metrics::incr(&self.app.metrics.frames_in);
        if !self.bucket.take(std::time::Instant::now()) {
            if self.bucket.abusive() {
                return Err(Ended::Close(CloseReason::PolicyViolation));
            }
            Metrics::incr(&self.app.metrics.rate_limited);
            return Ok(Some(ClientError::rate_limited().frame()));
        }
        if let Some(token) = refresh_request(text) {
            // A new token for the same user extends the socket past the old one's expiry; any
            // other token ends it, as an expired one would.
            return match self.app.verifier.verify(&token) {
                Ok(claims) if self.link.user.as_ref() == Some(&claims.user_id) => {
                    *expires = instant_of(claims.exp);
                    Ok(Some(token_refreshed(claims.exp)))
                }
                _ => Err(Ended::Close(CloseReason::InvalidToken)),
            };
        }
        // Boxed: inlined, the largest protocol future (database and presence calls) would be
        // part of every idle socket's task, for its whole life.
        match Box::pin(self.handler.on_text(self.app, &mut self.attached, text)).await {
            Ok(reply) => Ok(reply),
            Err(e) => {
                if let Some((group, seq)) = &e.withdrawn_echo {
                    self.seams.withdraw(group, *seq);
                }
                Ok(Some(e.frame()))
            }
        }
    }

    /// Serves the socket until it ends: the hub's frames out, the client's frames in, the
    /// heartbeat, the token's expiry and the stop signal.
    async fn serve<W, R>(
        &mut self,
        tx: &mut W,
        rx: &mut R,
        outbox: &flume::Receiver<Outbound>,
        expires_at: Option<i64>,
        mut stopped: Pin<&mut impl Future<Output = CloseReason>>,
    ) -> Ended
    where
        W: Sink<Message, Error = axum::Error> + Unpin,
        R: Stream<Item = Result<Message, axum::Error>> + Unpin,
    {
        let limits = &self.app.config.limits;
        // One timer for the heartbeat and the token's expiry, set to whichever comes first: each
        // timer is part of every idle socket's task.
        let mut next_ping = Instant::now() + limits.ping_interval;
        let mut expires = expires_at.map(instant_of).unwrap_or_else(far_future);
        let mut last_heard = Instant::now();
        let timer = tokio::time::sleep_until(next_ping.min(expires));
        tokio::pin!(timer);
        loop {
            // Not `biased`: under a constant outbound flood the client's frames must still be
            // read; the cancellation branches are at most one iteration late.
            let out = tokio::select! {
                reason = &mut stopped => return Ended::Close(reason),
                outbound = outbox.recv_async() => match outbound {
                    Err(_) => return Ended::Gone,
                    Ok(outbound) => self.seams.frame(outbound, &mut self.attached, &mut self.handler).map(Message::Text),
                },
                incoming = rx.next() => {
                    last_heard = Instant::now();
                    let reply = match text_of(incoming, tx, limits.close_grace).await {
                        Ok(Some(text)) => {
                            let was = expires;
                            let reply = self.on_text(text.as_str(), &mut expires).await;
                            if expires != was {
                                timer.as_mut().reset(next_ping.min(expires));
                            }
                            reply
                        }
                        Ok(None) => Ok(None),
                        Err(ended) => Err(ended),
                    };
                    match reply {
                        Ok(reply) => reply.map(Message::Text),
                        Err(ended) => return ended,
                    }
                }
                _ = &mut timer => {
                    let now = Instant::now();
                    if now >= expires {
                        return Ended::Close(CloseReason::InvalidToken);
                    }
                    if last_heard.elapsed() >= limits.idle_timeout {
                        return Ended::Close(CloseReason::Idle);
                    }
                    next_ping = now + limits.ping_interval;
                    timer.as_mut().reset(next_ping.min(expires));
                    Some(Message::Ping(Default::default()))
                }
            };
            if let Some(message) = out {
                if let Err(ended) = send(tx, message, stopped.as_mut()).await {
                    return ended;
                }
            }
        }
    }
}

impl Connection {
    pub(crate) async fn run<S>(self, socket: S)
    where
        S: Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Unpin,
    {
        let Connection { app, protocol, attached, outbox, handler, expires_at, resume } = self;
        let link = attached.link().clone();
        let limits = &app.config.limits;
        app.metrics.socket(protocol.name(), 1);
        Metrics::incr(&app.metrics.sockets_accepted);
        let (mut tx, mut rx) = socket.split();
        let stopped = stop_signal(&link);
        tokio::pin!(stopped);
        let (seams, backlog) = Seams::of(resume);
        let bucket = TokenBucket::new(limits.rate_per_sec, limits.rate_burst);
        let mut actor = Actor { app: &app, link: &link, attached, handler, bucket, seams };
        let ended = match greet(&mut actor, backlog, &mut tx, stopped.as_mut()).await {
            Some(ended) => ended,
            None => actor.serve(&mut tx, &mut rx, &outbox, expires_at, stopped.as_mut()).await,
        };
        Box::pin(actor.handler.on_close(&app)).await;
        if let Ended::Close(reason) = ended {
            say_goodbye(&app, reason, actor.seams.last_seq, &mut tx, &mut rx).await;
        }
        app.metrics.socket(protocol.name(), -1);
    }
}

/// The socket's first frames: its protocol's greeting, then what a resume replays. How the
/// socket ended if it ended meanwhile. (A function of its own: what the greeting holds is not
/// kept for the socket's whole life.)
async fn greet<W>(
    actor: &mut Actor<'_>,
    backlog: Vec<Frame>,
    tx: &mut W,
    mut stopped: Pin<&mut impl Future<Output = CloseReason>>,
) -> Option<Ended>
where
    W: Sink<Message, Error = axum::Error> + Unpin,
{
    let greeting = Box::pin(actor.handler.greeting(actor.app)).await;
    let opening = greeting.into_iter().chain(backlog.into_iter().map(|frame| frame.bytes));
    for frame in opening {
        if let Err(ended) = send(tx, Message::Text(frame), stopped.as_mut()).await {
            return Some(ended);
        }
    }
    None
}

/// Says why the socket closes, then waits for the peer's close reply; past the grace period the
/// TCP connection is dropped whatever the peer does. A close the client should come back from
/// says when (with jitter) and where from.
async fn say_goodbye<W, R>(app: &Node, reason: CloseReason, last_seq: Option<u64>, tx: &mut W, rx: &mut R)
where
    W: Sink<Message, Error = axum::Error> + Unpin,
    R: Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    tracing::debug!(code = reason.code(), "closing socket");
    app.metrics.closed(reason.code());
    let frame = match reason {
        CloseReason::Restarting | CloseReason::SlowConsumer => {
            reason.frame_with_hint(RETRY_HINT_MIN + random_below(RETRY_HINT_JITTER), last_seq)
        }
        _ => reason.frame(),
    };
    let _ = tokio::time::timeout(app.config.limits.close_grace, async {
        if tx.send(Message::Close(Some(frame))).await.is_ok() {
            while let Some(Ok(message)) = rx.next().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        }
    })
    .await;
}

/// The token of a `{"type": "refresh_token", "token": ...}` frame, understood on every socket
/// before its protocol sees the frame.
fn refresh_request(text: &str) -> Option<String> {
    // Every client frame passes here: decoded only when it may be one.
    if !text.contains("refresh_token") {
        return None;
    }
    #[derive(serde::Deserialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    enum Frame {
        RefreshToken { token: Option<String> },
    }
    match crate::protocols::frame::parse::<Frame>(text) {
        Ok(Parsed::Frame(Frame::RefreshToken { token })) => Some(token.unwrap_or_default()),
        // A refresh whose token is not a string: an empty token, refused as invalid.
        Err(e) if e.code == ErrorCode::InvalidPayload => Some(String::new()),
        // Not one (or not JSON): the socket's protocol answers it.
        Ok(Parsed::Unknown(_)) | Err(_) => None,
    }
}

fn token_refreshed(exp: i64) -> Utf8Bytes {
    serde_json::json!({"type": "token_refreshed", "expires_at": exp}).to_string().into()
}

/// The retry hint of a 1012 or 1013 close: at least this, plus up to `RETRY_HINT_JITTER`.
const RETRY_HINT_MIN: Duration = Duration::from_millis(250);
const RETRY_HINT_JITTER: Duration = Duration::from_millis(1000);

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_slot_costs_no_more_than_a_frame() {
        assert_eq!(std::mem::size_of::<Outbound>(), std::mem::size_of::<Frame>());
    }

    #[test]
    fn any_expiry_gives_an_instant_without_panicking() {
        for exp in [i64::MIN, -1, 0, chrono::Utc::now().timestamp() + 60, i64::MAX - 1, i64::MAX] {
            let at = instant_of(exp);
            assert!(at <= far_future() + Duration::from_secs(1));
        }
        assert!(instant_of(0) <= Instant::now(), "an expired token runs out at once");
    }
}
