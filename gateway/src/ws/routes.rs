//! The socket routes, one handler per path of PROTOCOL.md "The sockets". Each admits the client
//! (token, user, membership), joins its groups and hands it to the actor with its protocol.

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;
use shared::event::Group;
use shared::ids::{SessionId, UserId};

use super::{accept, authenticate, configure, reject, Connection};
use crate::app::AppState;
use crate::errors::CloseReason;
use crate::protocols::diary::PersonalSocket;
use crate::protocols::{sessions::SessionSocket, Protocol, SocketHandler};

#[derive(Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

/// `/ws/sessions/{session_id}/`: the Send Buddy session chat.
pub async fn session(
    State(app): State<AppState>,
    Path(session_id): Path<String>,
    Query(query): Query<TokenQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    let ws = configure(ws, &app);
    let (claims, user) = match authenticate(&app, query.token.as_deref()).await {
        Ok(found) => found,
        Err(reason) => return reject(ws, &app, reason),
    };
    // A malformed id is refused like an unknown one: no existence leak.
    let Ok(session_id) = SessionId::parse(&session_id) else { return reject(ws, &app, CloseReason::NotMember) };
    match app.store.session(&session_id).await {
        Ok(Some(session)) if session.has_participant(&user.id) => {}
        Ok(_) => return reject(ws, &app, CloseReason::NotMember),
        Err(e) => {
            tracing::error!(error = %e, "session lookup failed");
            return reject(ws, &app, CloseReason::Internal);
        }
    }
    let (mut attached, outbox) = match app.hub.attach(Some(user.id.clone()), Protocol::Sessions) {
        Ok(attached) => attached,
        Err(e) => {
            tracing::info!(user = %user.id, error = %e, "socket refused");
            return reject(ws, &app, CloseReason::PolicyViolation);
        }
    };
    let group = Group::session(&session_id);
    attached.join(group.clone()).await;
    let handler = SocketHandler::Sessions(SessionSocket {
        session_id,
        group,
        sender_name: user.shown_name().to_owned(),
        user: user.id,
    });
    accept(ws, Connection { app, attached, outbox, handler, expires_at: Some(claims.exp) })
}

/// `/api/v1/ws/{user_id}`: the Diary personal socket. The token's `sub` must be `user_id` (4004);
/// without a token only if `GATEWAY_ANONYMOUS_PERSONAL` allows it, and then it joins no group.
pub async fn personal(
    State(app): State<AppState>,
    Path(user_id): Path<String>,
    Query(query): Query<TokenQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    let ws = configure(ws, &app);
    let Ok(path_user) = UserId::parse(&user_id) else { return reject(ws, &app, CloseReason::NotMember) };
    let tokenless = query.token.as_deref().is_none_or(str::is_empty);
    if tokenless && app.config.anonymous_personal {
        let Ok((attached, outbox)) = app.hub.attach(None, Protocol::Diary) else {
            return reject(ws, &app, CloseReason::PolicyViolation);
        };
        let handler = SocketHandler::Diary(PersonalSocket { user_id: path_user.to_string() });
        return accept(ws, Connection { app, attached, outbox, handler, expires_at: None });
    }
    let (claims, user) = match authenticate(&app, query.token.as_deref()).await {
        Ok(found) => found,
        Err(reason) => return reject(ws, &app, reason),
    };
    if user.id != path_user {
        return reject(ws, &app, CloseReason::NotMember);
    }
    let (mut attached, outbox) = match app.hub.attach(Some(user.id.clone()), Protocol::Diary) {
        Ok(attached) => attached,
        Err(_) => return reject(ws, &app, CloseReason::PolicyViolation),
    };
    attached.join(Group::user(&user.id)).await;
    let handler = SocketHandler::Diary(PersonalSocket { user_id: user.id.to_string() });
    accept(ws, Connection { app, attached, outbox, handler, expires_at: Some(claims.exp) })
}
