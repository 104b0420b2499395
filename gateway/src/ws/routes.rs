//! The socket routes, one handler per path of PROTOCOL.md "The sockets". Each admits the client
//! (token, user, membership) and hands it, with its protocol and groups, to `admit`.

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;
use shared::event::Group;
use shared::ids::{ChatId, FocusSessionId, SessionId, UserId, WorkspaceId};

use super::{admit, authenticate, configure, reject};
use crate::app::AppState;
use crate::errors::CloseReason;
use crate::protocols::chat::ChatSocket;
use crate::protocols::diary::PersonalSocket;
use crate::protocols::onetask::OneTaskSocket;
use crate::protocols::pythia::PythiaSocket;
use crate::protocols::{sessions::SessionSocket, Protocol, SocketHandler};

#[derive(Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

/// Logs a database failure during admission and closes with 1011.
fn lookup_failed(ws: WebSocketUpgrade, app: &AppState, e: shared::store::StoreError) -> Response {
    tracing::error!(error = %e, "membership lookup failed");
    reject(ws, app, CloseReason::Internal)
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
        Err(e) => return lookup_failed(ws, &app, e),
    }
    let group = Group::session(&session_id);
    let handler = SocketHandler::Sessions(SessionSocket {
        session_id,
        group: group.clone(),
        sender_name: user.shown_name().to_owned(),
        user: user.id.clone(),
    });
    admit(ws, app, Some(user.id), Protocol::Sessions, vec![group], Vec::new(), handler, Some(claims.exp)).await
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
        let handler = SocketHandler::Diary(PersonalSocket { user_id: path_user.to_string() });
        return admit(ws, app, None, Protocol::Diary, Vec::new(), Vec::new(), handler, None).await;
    }
    let (claims, user) = match authenticate(&app, query.token.as_deref()).await {
        Ok(found) => found,
        Err(reason) => return reject(ws, &app, reason),
    };
    if user.id != path_user {
        return reject(ws, &app, CloseReason::NotMember);
    }
    let handler = SocketHandler::Diary(PersonalSocket { user_id: user.id.to_string() });
    let groups = vec![Group::user(&user.id)];
    admit(ws, app, Some(user.id), Protocol::Diary, groups, Vec::new(), handler, Some(claims.exp)).await
}

/// `/api/v1/ws/chat/{chat_id}`: a chat room, members only (4004).
pub async fn chat(
    State(app): State<AppState>,
    Path(chat_id): Path<String>,
    Query(query): Query<TokenQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    let ws = configure(ws, &app);
    let (claims, user) = match authenticate(&app, query.token.as_deref()).await {
        Ok(found) => found,
        Err(reason) => return reject(ws, &app, reason),
    };
    let Ok(chat_id) = ChatId::parse(&chat_id) else { return reject(ws, &app, CloseReason::NotMember) };
    match app.store.is_chat_member(&chat_id, &user.id).await {
        Ok(true) => {}
        Ok(false) => return reject(ws, &app, CloseReason::NotMember),
        Err(e) => return lookup_failed(ws, &app, e),
    }
    let group = Group::chat(&chat_id);
    let handler = SocketHandler::Chat(ChatSocket { chat_id, group: group.clone(), sender: user.snapshot() });
    admit(ws, app, Some(user.id), Protocol::Chat, vec![group], Vec::new(), handler, Some(claims.exp)).await
}

/// `/ws`: Pythia. The socket enters the room of every channel the user is a member of, and
/// `user:{id}` for mentions.
pub async fn pythia(State(app): State<AppState>, Query(query): Query<TokenQuery>, ws: WebSocketUpgrade) -> Response {
    let ws = configure(ws, &app);
    let (claims, user) = match authenticate(&app, query.token.as_deref()).await {
        Ok(found) => found,
        Err(reason) => return reject(ws, &app, reason),
    };
    let rooms = match app.store.channels_of(&user.id).await {
        Ok(channels) => channels.iter().map(Group::channel).collect(),
        Err(e) => return lookup_failed(ws, &app, e),
    };
    let groups = vec![Group::user(&user.id)];
    let id = user.id.clone();
    let handler = SocketHandler::Pythia(PythiaSocket::new(user));
    admit(ws, app, Some(id), Protocol::Pythia, groups, rooms, handler, Some(claims.exp)).await
}

/// `/ws/notifications`: a user's OneTask notifications and gamification events.
pub async fn notifications(
    State(app): State<AppState>,
    Query(query): Query<TokenQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    let ws = configure(ws, &app);
    let (claims, user) = match authenticate(&app, query.token.as_deref()).await {
        Ok(found) => found,
        Err(reason) => return reject(ws, &app, reason),
    };
    let groups = vec![Group::user(&user.id)];
    let handler = SocketHandler::OneTask(OneTaskSocket::Listener);
    admit(ws, app, Some(user.id), Protocol::OneTask, groups, Vec::new(), handler, Some(claims.exp)).await
}

/// `/ws/tasks/{workspace_id}`: a workspace's task updates, members only (4004).
pub async fn tasks(
    State(app): State<AppState>,
    Path(workspace_id): Path<String>,
    Query(query): Query<TokenQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    let ws = configure(ws, &app);
    let (claims, user) = match authenticate(&app, query.token.as_deref()).await {
        Ok(found) => found,
        Err(reason) => return reject(ws, &app, reason),
    };
    let Ok(workspace) = WorkspaceId::parse(&workspace_id) else { return reject(ws, &app, CloseReason::NotMember) };
    match app.store.is_workspace_member(&workspace, &user.id).await {
        Ok(true) => {}
        Ok(false) => return reject(ws, &app, CloseReason::NotMember),
        Err(e) => return lookup_failed(ws, &app, e),
    }
    let groups = vec![Group::workspace(&workspace)];
    let handler = SocketHandler::OneTask(OneTaskSocket::Listener);
    admit(ws, app, Some(user.id), Protocol::OneTask, groups, Vec::new(), handler, Some(claims.exp)).await
}

/// `/ws/focus/{session_id}`: a shared focus timer, participants only (4004).
pub async fn focus(
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
    let Ok(session_id) = FocusSessionId::parse(&session_id) else { return reject(ws, &app, CloseReason::NotMember) };
    match app.store.is_focus_participant(&session_id, &user.id).await {
        Ok(true) => {}
        Ok(false) => return reject(ws, &app, CloseReason::NotMember),
        Err(e) => return lookup_failed(ws, &app, e),
    }
    let group = Group::focus(&session_id);
    let handler =
        SocketHandler::OneTask(OneTaskSocket::Focus { session_id, group: group.clone(), user: user.id.clone() });
    admit(ws, app, Some(user.id), Protocol::OneTask, vec![group], Vec::new(), handler, Some(claims.exp)).await
}
