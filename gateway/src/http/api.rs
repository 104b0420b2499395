//! The server API (PROTOCOL.md "The server side"): backends call it with
//! `Authorization: Bearer <GATEWAY_API_KEY>`. `PUT`s are idempotent upserts. Bodies are parsed
//! here so that a bad one is answered with JSON that names the field.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::event::{Envelope, Event, Group};
use shared::ids::{ChatId, SessionId, UserId};
use shared::store::{ChatRecord, SessionRecord, UserRecord};
use utoipa::ToSchema;

use super::bounds;
use super::error::ApiError;
use super::extract::{history_caller, Backend, HistoryParams, HistoryQuery, JsonBody};
use super::responses::{BadField, BodyErrors, KeyThrottled, NotFound, Unauthorized, Unavailable};
use crate::node::Node;
use crate::protocols::chat::MessageData;
use crate::protocols::sessions::MessageFrame;

/// A user as the API answers it.
#[derive(Serialize, ToSchema)]
pub(crate) struct UserView {
    #[schema(value_type = String)]
    id: UserId,
    username: String,
    email: Option<String>,
    display_name: Option<String>,
    is_active: bool,
    /// RFC 3339.
    created_at: Option<String>,
}

impl UserView {
    fn new(user: &UserRecord) -> Self {
        Self {
            id: user.id.clone(),
            username: user.username.clone(),
            email: user.email.clone(),
            display_name: user.display_name.clone(),
            is_active: user.is_active,
            created_at: user.created_at.as_ref().map(shared::time::format),
        }
    }
}

/// A direct session (sessions.md) as the API answers it.
#[derive(Serialize, ToSchema)]
pub(crate) struct SessionView {
    #[schema(value_type = String)]
    id: SessionId,
    #[schema(value_type = String, pattern = "^[A-Za-z0-9_-]{1,64}$")]
    inviter_id: UserId,
    #[schema(value_type = String, pattern = "^[A-Za-z0-9_-]{1,64}$")]
    invitee_id: UserId,
    /// RFC 3339; null until its first message is persisted.
    last_message_at: Option<String>,
}

impl SessionView {
    fn new(session: &SessionRecord) -> Self {
        Self {
            id: session.id,
            inviter_id: session.inviter_id.clone(),
            invitee_id: session.invitee_id.clone(),
            last_message_at: session.last_message_at.as_ref().map(shared::time::format),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserBody {
    #[schema(min_length = 1, max_length = 150, pattern = "\\S")]
    username: String,
    #[schema(max_length = 254)]
    email: Option<String>,
    #[schema(max_length = 150)]
    display_name: Option<String>,
    /// `false` closes the user's open sockets on every node (4002); default `true`.
    is_active: Option<bool>,
}

/// Creates or updates a user (idempotent).
#[utoipa::path(put, path = "/api/v1/users/{id}", tag = "users", params(("id" = String, Path, description = "the user's id", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    request_body = UserBody, security(("api_key" = [])),
    responses((status = 200, description = "the user as stored", body = UserView), BadField, Unauthorized, BodyErrors, KeyThrottled, Unavailable))]
pub(crate) async fn put_user(
    State(app): State<Node>,
    Path(id): Path<String>,
    _backend: Backend,
    JsonBody(body): JsonBody<UserBody>,
) -> Result<Json<UserView>, ApiError> {
    let id = UserId::parse(&id).map_err(|e| ApiError::bad_field("id", e))?;
    bounds::user_id_free(id.as_str())?;
    if body.username.trim().is_empty() {
        return Err(ApiError::bad_field("username", "must not be empty"));
    }
    bounds::text_within("username", &body.username, bounds::USERNAME)?;
    bounds::text_within("email", body.email.as_deref().unwrap_or_default(), bounds::EMAIL)?;
    bounds::text_within("display_name", body.display_name.as_deref().unwrap_or_default(), bounds::DISPLAY_NAME)?;
    let user = UserRecord {
        id,
        username: body.username,
        email: body.email,
        display_name: body.display_name,
        is_active: body.is_active.unwrap_or(true),
        created_at: None,
    };
    app.store.upsert_user(&user).await?;
    let stored = app.store.user(&user.id).await?.ok_or_else(|| ApiError::not_found("user"))?;
    if !stored.is_active {
        // Deactivated: every node closes the user's open sockets (4002).
        let event = Event::AccountChanged { user_id: stored.id.clone() };
        super::publish::publish(&app, &Group::control(), Envelope::to_all(event)).await?;
    }
    Ok(Json(UserView::new(&stored)))
}

#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users", params(("id" = String, Path, description = "the user's id", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    security(("api_key" = [])),
    responses((status = 200, description = "the user", body = UserView), BadField, Unauthorized, NotFound, KeyThrottled, Unavailable))]
pub(crate) async fn get_user(
    State(app): State<Node>,
    Path(id): Path<String>,
    _backend: Backend,
) -> Result<Json<UserView>, ApiError> {
    let id = UserId::parse(&id).map_err(|e| ApiError::bad_field("id", e))?;
    let user = app.store.user(&id).await?.ok_or_else(|| ApiError::not_found("user"))?;
    Ok(Json(UserView::new(&user)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SessionBody {
    #[schema(value_type = String, pattern = "^[A-Za-z0-9_-]{1,64}$")]
    inviter_id: UserId,
    #[schema(value_type = String, pattern = "^[A-Za-z0-9_-]{1,64}$")]
    invitee_id: UserId,
}

/// Creates a direct session between two users, or replaces its participants (idempotent).
#[utoipa::path(put, path = "/api/v1/sessions/{id}", tag = "sessions", params(("id" = String, Path, description = "the session's id", format = Uuid)),
    request_body = SessionBody, security(("api_key" = [])),
    responses((status = 200, description = "the session as stored", body = SessionView), BadField, Unauthorized, BodyErrors, KeyThrottled, Unavailable))]
pub(crate) async fn put_session(
    State(app): State<Node>,
    Path(id): Path<String>,
    _backend: Backend,
    JsonBody(body): JsonBody<SessionBody>,
) -> Result<Json<SessionView>, ApiError> {
    let id = SessionId::parse(&id).map_err(|e| ApiError::bad_field("id", e))?;
    app.store.upsert_session(&id, &body.inviter_id, &body.invitee_id).await?;
    super::publish::membership_changed(&app, Group::session(&id)).await?;
    let session = app.store.session(&id).await?.ok_or_else(|| ApiError::not_found("session"))?;
    Ok(Json(SessionView::new(&session)))
}

#[utoipa::path(get, path = "/api/v1/sessions/{id}", tag = "sessions", params(("id" = String, Path, description = "the session's id", format = Uuid)),
    security(("api_key" = [])),
    responses((status = 200, description = "the session", body = SessionView), Unauthorized, NotFound, KeyThrottled, Unavailable))]
pub(crate) async fn get_session(
    State(app): State<Node>,
    Path(id): Path<String>,
    _backend: Backend,
) -> Result<Json<SessionView>, ApiError> {
    let id = SessionId::parse(&id).map_err(|_| ApiError::not_found("session"))?;
    let session = app.store.session(&id).await?.ok_or_else(|| ApiError::not_found("session"))?;
    Ok(Json(SessionView::new(&session)))
}

/// A session's history, newest first, each item shaped like the `message` frame. Open to the
/// backend's key and to a participant's own JWT; anyone else gets 404 (no leak).
#[utoipa::path(get, path = "/api/v1/sessions/{id}/messages", tag = "sessions",
    params(("id" = String, Path, description = "the session's id", format = Uuid), HistoryQuery),
    security(("api_key" = []), ("user_jwt" = [])),
    responses((status = 200, description = "a page of messages", body = SessionHistory), BadField, Unauthorized, NotFound, Unavailable))]
pub(crate) async fn session_messages(
    State(app): State<Node>,
    Path(id): Path<String>,
    HistoryParams(query): HistoryParams,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let page = query.page()?;
    let caller = history_caller(&app, &headers).await?;
    let id = SessionId::parse(&id).map_err(|_| ApiError::not_found("session"))?;
    let session = app.store.session(&id).await?.ok_or_else(|| ApiError::not_found("session"))?;
    if caller.is_some_and(|user| !session.has_participant(&user)) {
        return Err(ApiError::not_found("session"));
    }
    let messages = app.store.session_messages(&id, page).await?;
    Ok(Json(
        serde_json::to_value(SessionHistory { messages: messages.iter().map(MessageFrame::new).collect() })
            .expect("serializes"),
    ))
}

/// A session's history: newest first.
#[derive(Serialize, ToSchema)]
pub(crate) struct SessionHistory<'a> {
    messages: Vec<MessageFrame<'a>>,
}

/// A chat's history: newest first.
#[derive(Serialize, ToSchema)]
pub(crate) struct ChatHistory<'a> {
    messages: Vec<MessageData<'a>>,
}

/// A chat (chat.txt) as the API answers it.
#[derive(Serialize, ToSchema)]
pub(crate) struct ChatView {
    #[schema(value_type = String)]
    id: ChatId,
    #[schema(value_type = Vec<String>)]
    member_ids: Vec<UserId>,
    /// RFC 3339; null until its first message is persisted.
    last_message_at: Option<String>,
}

impl ChatView {
    fn new(chat: &ChatRecord) -> Self {
        Self {
            id: chat.id.clone(),
            member_ids: chat.member_ids.clone(),
            last_message_at: chat.last_message_at.as_ref().map(shared::time::format),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MembersBody {
    #[schema(value_type = Vec<String>)]
    member_ids: Vec<UserId>,
}

/// Creates the chat or replaces its members (idempotent); sockets of removed members leave it.
#[utoipa::path(put, path = "/api/v1/chats/{id}", tag = "chats", params(("id" = String, Path, description = "the chat's id", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    request_body = MembersBody, security(("api_key" = [])),
    responses((status = 200, description = "the chat as stored", body = ChatView), BadField, Unauthorized, BodyErrors, KeyThrottled, Unavailable))]
pub(crate) async fn put_chat(
    State(app): State<Node>,
    Path(id): Path<String>,
    _backend: Backend,
    JsonBody(body): JsonBody<MembersBody>,
) -> Result<Json<ChatView>, ApiError> {
    let id = ChatId::parse(&id).map_err(|e| ApiError::bad_field("id", e))?;
    app.store.upsert_chat(&id, &body.member_ids).await?;
    super::publish::membership_changed(&app, Group::chat(&id)).await?;
    let chat = app.store.chat(&id).await?.ok_or_else(|| ApiError::not_found("chat"))?;
    Ok(Json(ChatView::new(&chat)))
}

#[utoipa::path(get, path = "/api/v1/chats/{id}", tag = "chats", params(("id" = String, Path, description = "the chat's id", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    security(("api_key" = [])),
    responses((status = 200, description = "the chat", body = ChatView), Unauthorized, NotFound, KeyThrottled, Unavailable))]
pub(crate) async fn get_chat(
    State(app): State<Node>,
    Path(id): Path<String>,
    _backend: Backend,
) -> Result<Json<ChatView>, ApiError> {
    let id = ChatId::parse(&id).map_err(|_| ApiError::not_found("chat"))?;
    let chat = app.store.chat(&id).await?.ok_or_else(|| ApiError::not_found("chat"))?;
    Ok(Json(ChatView::new(&chat)))
}

/// A chat's history, newest first, each item shaped like `new_message.data`; direct messages
/// are not part of it. Open to the backend's key and to a member's own JWT; others get 404.
#[utoipa::path(get, path = "/api/v1/chats/{id}/messages", tag = "chats",
    params(("id" = String, Path, description = "the chat's id", pattern = "^[A-Za-z0-9_-]{1,64}$"), HistoryQuery),
    security(("api_key" = []), ("user_jwt" = [])),
    responses((status = 200, description = "a page of messages", body = ChatHistory), BadField, Unauthorized, NotFound, Unavailable))]
pub(crate) async fn chat_messages(
    State(app): State<Node>,
    Path(id): Path<String>,
    HistoryParams(query): HistoryParams,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let page = query.page()?;
    let caller = history_caller(&app, &headers).await?;
    let id = ChatId::parse(&id).map_err(|_| ApiError::not_found("chat"))?;
    app.store.chat(&id).await?.ok_or_else(|| ApiError::not_found("chat"))?;
    if let Some(user) = caller {
        if !app.store.is_chat_member(&id, &user).await? {
            return Err(ApiError::not_found("chat"));
        }
    }
    let messages = app.store.chat_messages(&id, page).await?;
    Ok(Json(
        serde_json::to_value(ChatHistory { messages: messages.iter().map(MessageData::new).collect() })
            .expect("serializes"),
    ))
}
