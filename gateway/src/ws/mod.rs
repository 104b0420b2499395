//! WebSocket admission: authenticate and authorize before the upgrade completes, so that a client
//! whose socket opened is already in its groups (nothing published after `onopen` is missed), and
//! a refused client gets its 4001–4004 close code on an accepted socket, as the guides expect.

use axum::extract::ws::WebSocketUpgrade;
use axum::response::Response;
use shared::auth::{AuthError, Claims};
use shared::event::Group;
use shared::ids::UserId;
use shared::store::UserRecord;

use crate::errors::CloseReason;
use crate::hub::Attached;
use crate::metrics::Metrics;
use crate::node::Node;
use crate::protocols::{Protocol, SocketHandler};

pub(crate) mod connection;
pub(crate) mod rate;
pub(crate) mod routes;
pub(crate) mod seams;

pub(crate) use connection::Connection;

/// Small buffers per socket: an idle socket must cost a few KiB, not the 128 KiB default.
/// The read buffer is allocated with the socket and grows for a larger frame (up to the frame
/// limit); it is only the chunk size of a read. 256 bytes hold a typical client frame in one read
/// (bench/RESULTS.md, memory per idle socket).
const READ_BUFFER: usize = 256;
const WRITE_BUFFER: usize = 0;

/// Applies the frame-size limit and the small per-socket buffers.
/// The subprotocol a client names to pass its token in `Sec-WebSocket-Protocol` (`bearer`, then
/// the JWT); the server's answer names only `bearer`, never the token.
pub(crate) const BEARER_SUBPROTOCOL: &str = "bearer";

pub(crate) fn configure(ws: WebSocketUpgrade, app: &Node) -> WebSocketUpgrade {
    let max = app.config.limits.max_frame_bytes;
    ws.protocols([BEARER_SUBPROTOCOL])
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        // A full write buffer makes `send` wait (backpressure) instead of growing.
        .max_write_buffer_size(max.max(READ_BUFFER) * 2)
        .max_message_size(max)
        .max_frame_size(max)
}

/// Who is connecting: token (4001/4003), then the user record (4002).
pub(crate) async fn authenticate(app: &Node, token: Option<&str>) -> Result<(Claims, UserRecord), CloseReason> {
    let token = token.filter(|t| !t.is_empty()).ok_or(CloseReason::NoToken)?;
    let claims = app.verifier.verify(token).map_err(|e| match e {
        AuthError::Expired | AuthError::Invalid => CloseReason::InvalidToken,
    })?;
    let user = app
        .store
        .user(&claims.user_id)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "user lookup failed");
            CloseReason::Internal
        })?
        .filter(|u| u.is_active)
        .ok_or(CloseReason::UserNotFound)?;
    Ok((claims, user))
}

/// Accepts the upgrade only to close it at once with `reason`.
pub(crate) fn reject(ws: WebSocketUpgrade, app: &Node, reason: CloseReason) -> Response {
    Metrics::incr(&app.metrics.sockets_rejected);
    app.metrics.closed(reason.code());
    let grace = app.config.limits.close_grace;
    ws.on_upgrade(move |mut socket| async move {
        let _ = tokio::time::timeout(grace, async {
            if socket.send(axum::extract::ws::Message::Close(Some(reason.frame()))).await.is_ok() {
                while let Some(Ok(message)) = socket.recv().await {
                    if matches!(message, axum::extract::ws::Message::Close(_)) {
                        break;
                    }
                }
            }
        })
        .await;
    })
}

/// Registers an admitted socket in the hub, joins its groups (waiting for the node's
/// subscriptions), completes the upgrade and hands the socket to its actor, tracked for drain.
/// `user` is `None` only for a tokenless personal socket; `expires_at` is the token's `exp`.
/// `rooms` are groups in which the user also counts as present (Pythia channel rooms). `from` is
/// where a reconnecting client resumes: `?since=` on a single-group socket, `?resume=` on one of
/// several groups (`crate::resume`).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn admit(
    ws: WebSocketUpgrade,
    app: Node,
    user: Option<UserId>,
    protocol: Protocol,
    groups: Vec<Group>,
    rooms: Vec<Group>,
    handler: SocketHandler,
    expires_at: Option<i64>,
    from: &crate::resume::ResumeFrom,
) -> Response {
    let (mut attached, outbox) = match Attached::attach(&app.hub, user.clone(), protocol.format()) {
        Ok(attached) => attached,
        Err(e) => {
            tracing::info!(user = ?user.as_ref().map(UserId::as_str), error = %e, "socket refused");
            return reject(ws, &app, CloseReason::PolicyViolation);
        }
    };
    // The per-user cap counts the user's sockets on every live node, not just this one: checked
    // and recorded in one round trip (so that the next admission anywhere counts this one).
    if let Some(user) = &user {
        let (here, cap) = (app.hub.sockets_of(user), app.config.limits.max_sockets_per_user);
        match app.presence.admit_socket(&app.node_id, user, here, cap, crate::presence::DEAD_AFTER).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(user = user.as_str(), "socket refused: the user's cap is reached cluster-wide");
                drop(attached);
                return reject(ws, &app, CloseReason::PolicyViolation);
            }
            // Presence unreachable: this node's own cap still holds.
            Err(e) => tracing::warn!(error = %e, "cluster-wide socket count unavailable"),
        }
    }
    // Resuming needs one group whose numbers the client kept (Pythia's sockets have several).
    let single = match (groups.as_slice(), rooms.is_empty()) {
        ([group], true) => Some(group.clone()),
        _ => None,
    };
    let resumed = single.clone().zip(from.since.clone());
    // Several groups: positions kept, and handed out as a token, for a client that asks.
    let token = from.resume.as_deref().filter(|_| single.is_none());
    if token.is_some() {
        attached.track_positions();
    }
    for group in groups {
        attached.join(group).await;
    }
    for room in rooms {
        attached.join_room(room).await;
    }
    // Read after joining, so that nothing published meanwhile falls between replay and live.
    let resume = match resumed {
        Some((group, since)) => crate::resume::resume(&app, &group, &since, protocol, user.as_ref()).await,
        None => match token {
            Some(token) => crate::resume::resume_groups(&app, &mut attached, token, protocol, user.as_ref()).await,
            None => crate::resume::Resume { resumable: single.is_some(), ..Default::default() },
        },
    };
    let connection = Connection { app, protocol, attached, outbox, handler, expires_at, resume };
    let tracker = connection.app.tracker.clone();
    ws.on_upgrade(move |socket| tracker.track_future(connection.run(socket)))
}
