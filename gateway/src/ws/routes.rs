//! The socket routes, one handler per path of PROTOCOL.md "The sockets". Each admits the client
//! (token and user: 4001–4003; membership: 4004) and hands it, with its protocol and groups, to
//! `admit`. A refusal is an accepted upgrade closed at once with its code, returned as `Err`.

// A refusal is a `Response` (128 bytes) made once per connection attempt; boxing it buys nothing.
#![allow(clippy::result_large_err)]

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;
use shared::auth::Claims;
use shared::event::Group;
use shared::ids::{ChatId, FocusSessionId, IdError, SessionId, UserId, WorkspaceId};
use shared::store::{StoreError, UserRecord};

use super::{admit, authenticate, configure, reject};
use crate::errors::CloseReason;
use crate::node::Node;
use crate::protocols::chat::ChatSocket;
use crate::protocols::diary::PersonalSocket;
use crate::protocols::onetask::OneTaskSocket;
use crate::protocols::pythia::PythiaSocket;
use crate::protocols::{sessions::SessionSocket, Protocol, SocketHandler};
use crate::resume::ResumeFrom;

/// What a client connects with: its token, from `?token=` or, kept out of URLs and so out of
/// proxy logs, from `Sec-WebSocket-Protocol: bearer, <JWT>` (the server then answers with the
/// subprotocol `bearer`, `configure`); and `?since=` or `?resume=`, where it resumes from.
pub(crate) struct TokenQuery {
    token: Option<String>,
    resume: ResumeFrom,
}

#[derive(Deserialize)]
struct InQuery {
    token: Option<String>,
    #[serde(flatten)]
    resume: ResumeFrom,
}

/// The token a client offered as the subprotocol after `bearer`.
fn subprotocol_token(headers: &axum::http::HeaderMap) -> Option<String> {
    let offered = headers.get(axum::http::header::SEC_WEBSOCKET_PROTOCOL)?.to_str().ok()?;
    let mut protocols = offered.split(',').map(str::trim);
    protocols.by_ref().find(|p| *p == super::BEARER_SUBPROTOCOL)?;
    protocols.next().filter(|t| !t.is_empty()).map(str::to_owned)
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for TokenQuery {
    type Rejection = axum::extract::rejection::QueryRejection;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(query) = Query::<InQuery>::from_request_parts(parts, state).await?;
        let token = subprotocol_token(&parts.headers).or(query.token);
        Ok(Self { token, resume: query.resume })
    }
}

type Refused = Response;

/// A client whose token and user were accepted.
struct Admitted {
    ws: WebSocketUpgrade,
    claims: Claims,
    user: UserRecord,
    resume: ResumeFrom,
}

/// Token (4001, 4003) and user (4002).
async fn authenticated(ws: WebSocketUpgrade, app: &Node, query: &TokenQuery) -> Result<Admitted, Refused> {
    let ws = configure(ws, app);
    match authenticate(app, query.token.as_deref()).await {
        Ok((claims, user)) => Ok(Admitted { ws, claims, user, resume: query.resume.clone() }),
        Err(reason) => Err(reject(ws, app, reason)),
    }
}

impl Admitted {
    /// The id in the path; a malformed one is refused like an unknown one (4004, no existence leak).
    fn id<T>(self, parsed: Result<T, IdError>, app: &Node) -> Result<(Self, T), Refused> {
        match parsed {
            Ok(id) => Ok((self, id)),
            Err(_) => Err(reject(self.ws, app, CloseReason::NotMember)),
        }
    }

    /// A database answer needed for admission; a failed lookup closes with 1011.
    fn looked_up<T>(self, found: Result<T, StoreError>, app: &Node) -> Result<(Self, T), Refused> {
        match found {
            Ok(value) => Ok((self, value)),
            Err(e) => {
                tracing::error!(error = %e, "admission lookup failed");
                Err(reject(self.ws, app, CloseReason::Internal))
            }
        }
    }

    /// Membership of what the path names: 4004 when not a member.
    fn member(self, found: Result<bool, StoreError>, app: &Node) -> Result<Self, Refused> {
        match self.looked_up(found, app)? {
            (client, true) => Ok(client),
            (client, false) => Err(reject(client.ws, app, CloseReason::NotMember)),
        }
    }

    async fn admit(
        self,
        app: Node,
        protocol: Protocol,
        groups: Vec<Group>,
        rooms: Vec<Group>,
        handler: SocketHandler,
    ) -> Response {
        let user = Some(self.user.id.clone());
        admit(self.ws, app, user, protocol, groups, rooms, handler, Some(self.claims.exp), &self.resume).await
    }
}

/// `/ws/sessions/{session_id}/`: the Send Buddy session chat, participants only.
pub(crate) async fn session(
    State(app): State<Node>,
    Path(session_id): Path<String>,
    query: TokenQuery,
    ws: WebSocketUpgrade,
) -> Result<Response, Refused> {
    let (client, session_id) = authenticated(ws, &app, &query).await?.id(SessionId::parse(&session_id), &app)?;
    let found = app.store.session(&session_id).await.map(|s| s.is_some_and(|s| s.has_participant(&client.user.id)));
    let client = client.member(found, &app)?;
    let group = Group::session(&session_id);
    let handler = SocketHandler::Sessions(SessionSocket {
        session_id,
        group: group.clone(),
        sender_name: client.user.shown_name().to_owned(),
        user: client.user.id.clone(),
    });
    Ok(client.admit(app, Protocol::Sessions, vec![group], Vec::new(), handler).await)
}

/// `/api/v1/ws/{user_id}`: the Diary personal socket. The token's `sub` must be `user_id` (4004);
/// without a token only if `GATEWAY_ANONYMOUS_PERSONAL` allows it, and then it joins no group.
pub(crate) async fn personal(
    State(app): State<Node>,
    Path(user_id): Path<String>,
    query: TokenQuery,
    ws: WebSocketUpgrade,
) -> Result<Response, Refused> {
    let tokenless = query.token.as_deref().is_none_or(str::is_empty);
    if tokenless && app.config.anonymous_personal {
        let ws = configure(ws, &app);
        let Ok(path_user) = UserId::parse(&user_id) else { return Err(reject(ws, &app, CloseReason::NotMember)) };
        let handler = SocketHandler::Diary(PersonalSocket { user_id: path_user.to_string() });
        return Ok(admit(
            ws,
            app,
            None,
            Protocol::Diary,
            Vec::new(),
            Vec::new(),
            handler,
            None,
            &ResumeFrom::default(),
        )
        .await);
    }
    let (client, path_user) = authenticated(ws, &app, &query).await?.id(UserId::parse(&user_id), &app)?;
    let same = client.user.id == path_user;
    let client = client.member(Ok(same), &app)?;
    let handler = SocketHandler::Diary(PersonalSocket { user_id: client.user.id.to_string() });
    let groups = vec![Group::user(&client.user.id)];
    Ok(client.admit(app, Protocol::Diary, groups, Vec::new(), handler).await)
}

/// `/api/v1/ws/chat/{chat_id}`: a chat room, members only.
pub(crate) async fn chat(
    State(app): State<Node>,
    Path(chat_id): Path<String>,
    query: TokenQuery,
    ws: WebSocketUpgrade,
) -> Result<Response, Refused> {
    let (client, chat_id) = authenticated(ws, &app, &query).await?.id(ChatId::parse(&chat_id), &app)?;
    let found = app.store.is_chat_member(&chat_id, &client.user.id).await;
    let client = client.member(found, &app)?;
    let group = Group::chat(&chat_id);
    let handler = SocketHandler::Chat(ChatSocket { chat_id, group: group.clone(), sender: client.user.snapshot() });
    Ok(client.admit(app, Protocol::Chat, vec![group], Vec::new(), handler).await)
}

/// `/ws`: Pythia. The socket enters the room of every channel the user is a member of, and
/// `user:{id}` for mentions.
pub(crate) async fn pythia(
    State(app): State<Node>,
    query: TokenQuery,
    ws: WebSocketUpgrade,
) -> Result<Response, Refused> {
    let client = authenticated(ws, &app, &query).await?;
    let found = app.store.channels_of(&client.user.id).await;
    let (client, channels) = client.looked_up(found, &app)?;
    let rooms = channels.iter().map(Group::channel).collect();
    let groups = vec![Group::user(&client.user.id)];
    let handler = SocketHandler::Pythia(PythiaSocket::new(client.user.clone()));
    Ok(client.admit(app, Protocol::Pythia, groups, rooms, handler).await)
}

/// `/ws/notifications`: a user's OneTask notifications and gamification events.
pub(crate) async fn notifications(
    State(app): State<Node>,
    query: TokenQuery,
    ws: WebSocketUpgrade,
) -> Result<Response, Refused> {
    let client = authenticated(ws, &app, &query).await?;
    let groups = vec![Group::user(&client.user.id)];
    Ok(client.admit(app, Protocol::OneTask, groups, Vec::new(), SocketHandler::OneTask(OneTaskSocket::Listener)).await)
}

/// `/ws/tasks/{workspace_id}`: a workspace's task updates, members only.
pub(crate) async fn tasks(
    State(app): State<Node>,
    Path(workspace_id): Path<String>,
    query: TokenQuery,
    ws: WebSocketUpgrade,
) -> Result<Response, Refused> {
    let (client, workspace) = authenticated(ws, &app, &query).await?.id(WorkspaceId::parse(&workspace_id), &app)?;
    let found = app.store.is_workspace_member(&workspace, &client.user.id).await;
    let client = client.member(found, &app)?;
    let groups = vec![Group::workspace(&workspace)];
    Ok(client.admit(app, Protocol::OneTask, groups, Vec::new(), SocketHandler::OneTask(OneTaskSocket::Listener)).await)
}

/// `/ws/focus/{session_id}`: a shared focus timer, participants only.
pub(crate) async fn focus(
    State(app): State<Node>,
    Path(session_id): Path<String>,
    query: TokenQuery,
    ws: WebSocketUpgrade,
) -> Result<Response, Refused> {
    let (client, session_id) = authenticated(ws, &app, &query).await?.id(FocusSessionId::parse(&session_id), &app)?;
    let found = app.store.is_focus_participant(&session_id, &client.user.id).await;
    let client = client.member(found, &app)?;
    let group = Group::focus(&session_id);
    let user = client.user.id.clone();
    let handler = SocketHandler::OneTask(OneTaskSocket::Focus { session_id, group: group.clone(), user });
    Ok(client.admit(app, Protocol::OneTask, vec![group], Vec::new(), handler).await)
}
