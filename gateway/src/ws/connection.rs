//! The socket actor: one task owns one socket. A `select!` over the client's frames, the outbox
//! the hub fills, the hub's kick, drain, the token's expiry and the heartbeat. Generic over
//! `Sink`/`Stream` so that a test can drive it with channels.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use axum::extract::ws::Message;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::time::Instant;

use super::rate::TokenBucket;
use crate::errors::{ClientError, CloseReason, ErrorCode};
use crate::hub::{Attached, OfGroup, Outbound};
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

impl Connection {
    pub(crate) async fn run<S>(self, socket: S)
    where
        S: Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Unpin,
    {
        let Connection { app, protocol, mut attached, outbox, mut handler, expires_at, resume } = self;
        let crate::resume::Resume { backlog, mut delivered_upto, resumable, mut delivered_upto_in, .. } = resume;
        // The last `seq` this client was sent (single-group sockets; a replay counts): the resume
        // point a 1012 or 1013 close names.
        let mut last_seq = delivered_upto;
        let link = attached.link().clone();
        let limits = &app.config.limits;
        app.metrics.socket(protocol.name(), 1);
        Metrics::incr(&app.metrics.sockets_accepted);

        let (mut tx, mut rx) = socket.split();
        // Why the socket must close from outside: the hub kicks it, or the node drains. Made once
        // and polled by every wait below (made anew per frame, it added and removed two waiters
        // under the tokens' locks for every frame sent). Never polled again once it has resolved:
        // each wait that sees it resolve ends the loop.
        let stopped = async {
            tokio::select! {
                biased;
                reason = link.kicked() => reason,
                // A drain closes the node's sockets at random moments over the drain window (the
                // socket serves on until then), so that their reconnects do not all land at once.
                _ = async {
                    app.shutdown.cancelled().await;
                    tokio::time::sleep(jitter(limits.drain_window)).await;
                } => CloseReason::Restarting,
            }
        };
        tokio::pin!(stopped);
        let mut bucket = TokenBucket::new(limits.rate_per_sec, limits.rate_burst);
        let mut heartbeat = tokio::time::interval_at(Instant::now() + limits.ping_interval, limits.ping_interval);
        let mut last_heard = Instant::now();
        let expiry = tokio::time::sleep_until(expires_at.map(instant_of).unwrap_or_else(far_future));
        tokio::pin!(expiry);

        // The protocol futures are boxed: inlined, the largest of them (database and presence
        // calls) would be part of every idle socket's task, for its whole life.
        // In a block of its own: what the greeting holds is not kept for the socket's whole life.
        let greeting = {
            let opening = Box::pin(handler.greeting(&app)).await.into_iter().chain(backlog);
            let mut ended = None;
            for frame in opening {
                if let Err(end) = send(&mut tx, Message::Text(frame), stopped.as_mut()).await {
                    ended = Some(end);
                    break;
                }
            }
            ended
        };
        let ended = if let Some(ended) = greeting {
            ended
        } else {
            loop {
                // Not `biased`: under a constant outbound flood the client's frames must still be
                // read; the cancellation branches are at most one iteration late.
                tokio::select! {
                    reason = &mut stopped => break Ended::Close(reason),
                    _ = &mut expiry => break Ended::Close(CloseReason::InvalidToken),
                    outbound = outbox.recv_async() => {
                        let outbound = outbound.ok();
                        let frame = match outbound {
                            None => break Ended::Gone,
                            Some(Outbound::Frame(frame)) => {
                                link.taken(&frame);
                                let seq = if resumable { crate::resume::frame_seq(frame.as_str()) } else { None };
                                // After a resume: what the replay already delivered comes live
                                // too, once; live frames are in order, so the first newer one
                                // ends the skipping.
                                if let Some(upto) = delivered_upto {
                                    match seq {
                                        Some(seq) if seq <= upto => continue,
                                        _ => delivered_upto = None,
                                    }
                                }
                                last_seq = seq.or(last_seq);
                                frame
                            }
                            Some(Outbound::OfGroup(of_group)) => match *of_group {
                                OfGroup::Frame(group, frame) => {
                                    // A socket of several groups: the same seam per group, then the
                                    // frame carries every group's position after it.
                                    link.taken(&frame);
                                    let seq = crate::resume::frame_seq(frame.as_str());
                                    if let (Some(seq), Some(upto)) = (seq, delivered_upto_in.get(&group)) {
                                        if seq <= *upto {
                                            continue;
                                        }
                                        delivered_upto_in.remove(&group);
                                    }
                                    if let Some(seq) = seq {
                                        attached.advance(&group, seq);
                                    }
                                    crate::resume::with_token(frame, attached.positions())
                                }
                                OfGroup::Leave(room) => match handler.on_evicted(&mut attached, &room) {
                                    Some(frame) => frame,
                                    None => continue,
                                },
                            },
                        };
                        if let Err(ended) = send(&mut tx, Message::Text(frame), stopped.as_mut()).await {
                            break ended;
                        }
                    }
                    incoming = rx.next() => {
                        last_heard = Instant::now();
                        let text = match incoming {
                            None => break Ended::Gone,
                            Some(Err(e)) => break read_error(e),
                            Some(Ok(Message::Text(text))) => text,
                            Some(Ok(Message::Binary(_))) => break Ended::Close(CloseReason::BinaryFrame),
                            // Pings are answered by the WebSocket layer; a pong only proves liveness.
                            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                            Some(Ok(Message::Close(_))) => {
                                // The WebSocket layer queued the close reply; flush it.
                                let _ = tokio::time::timeout(limits.close_grace, tx.close()).await;
                                break Ended::Gone;
                            }
                        };
                        Metrics::incr(&app.metrics.frames_in);
                        let reply = if bucket.take(std::time::Instant::now()) {
                            if let Some(token) = refresh_request(text.as_str()) {
                                // A new token for the same user extends the socket past the old one's
                                // expiry; any other token ends it, as an expired one would.
                                match app.verifier.verify(&token) {
                                    Ok(claims) if link.user.as_ref() == Some(&claims.user_id) => {
                                        expiry.as_mut().reset(instant_of(claims.exp));
                                        Some(token_refreshed(claims.exp))
                                    }
                                    _ => break Ended::Close(CloseReason::InvalidToken),
                                }
                            } else {
                                match Box::pin(handler.on_text(&app, &mut attached, text.as_str())).await {
                                    Ok(reply) => reply,
                                    Err(e) => Some(e.frame()),
                                }
                            }
                        } else if bucket.abusive() {
                            break Ended::Close(CloseReason::PolicyViolation);
                        } else {
                            Metrics::incr(&app.metrics.rate_limited);
                            Some(ClientError::rate_limited().frame())
                        };
                        if let Some(reply) = reply {
                            if let Err(ended) = send(&mut tx, Message::Text(reply), stopped.as_mut()).await {
                                break ended;
                            }
                        }
                    }
                    _ = heartbeat.tick() => {
                        if last_heard.elapsed() >= limits.idle_timeout {
                            break Ended::Close(CloseReason::Idle);
                        }
                        if let Err(ended) = send(&mut tx, Message::Ping(Default::default()), stopped.as_mut()).await {
                            break ended;
                        }
                    }
                }
            }
        };
        Box::pin(handler.on_close(&app)).await;

        if let Ended::Close(reason) = ended {
            tracing::debug!(code = reason.code(), "closing socket");
            app.metrics.closed(reason.code());
            // Say why, then wait for the peer's close reply; past the grace period the TCP
            // connection is dropped whatever the peer does.
            // Closes the client should come back from say when, with jitter, and where from.
            let frame = match reason {
                CloseReason::Restarting | CloseReason::SlowConsumer => {
                    reason.frame_with_hint(RETRY_HINT_MIN + jitter(RETRY_HINT_JITTER), last_seq)
                }
                _ => reason.frame(),
            };
            let _ = tokio::time::timeout(limits.close_grace, async {
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
        app.metrics.socket(protocol.name(), -1);
        drop(attached);
    }
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

fn token_refreshed(exp: i64) -> axum::extract::ws::Utf8Bytes {
    serde_json::json!({"type": "token_refreshed", "expires_at": exp}).to_string().into()
}

/// The retry hint of a 1012 or 1013 close: at least this, plus up to `RETRY_HINT_JITTER`.
const RETRY_HINT_MIN: Duration = Duration::from_millis(250);
const RETRY_HINT_JITTER: Duration = Duration::from_millis(1000);

/// A uniformly random duration below `window`.
fn jitter(window: Duration) -> Duration {
    let ms = window.as_millis() as u64;
    if ms == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis((uuid::Uuid::new_v4().as_u128() % u128::from(ms)) as u64)
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_slot_costs_no_more_than_a_frame() {
        assert_eq!(std::mem::size_of::<Outbound>(), std::mem::size_of::<axum::extract::ws::Utf8Bytes>());
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
