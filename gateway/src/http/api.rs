//! The server API (PROTOCOL.md "The server side"): backends call it with
//! `Authorization: Bearer <GATEWAY_API_KEY>`. `PUT`s are idempotent upserts. Bodies are parsed
//! here so that a bad one is answered with JSON that names the field.

use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::event::{Envelope, Event, Group};
use shared::ids::{ChatId, MessageId, SessionId, UserId};
use shared::store::{ChatRecord, Page, SessionRecord, UserRecord};
use utoipa::{IntoParams, ToSchema};

use super::error::ApiError;
use super::openapi::{BadField, BodyErrors, KeyThrottled, NotFound, Unauthorized, Unavailable};
use crate::app::AppState;
use crate::protocols::chat::MessageData;
use crate::protocols::sessions::MessageFrame;

const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 200;

pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

/// Compares without an early exit, so that response time does not reveal the key's prefix.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(super) fn is_backend(app: &AppState, headers: &HeaderMap) -> bool {
    bearer(headers).is_some_and(|key| same_secret(key, &app.config.api_key))
}

/// Proof that the caller is the backend (`Authorization: Bearer <GATEWAY_API_KEY>`); 401 otherwise.
pub struct Backend;

impl FromRequestParts<AppState> for Backend {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        if is_backend(app, &parts.headers) {
            return Ok(Backend);
        }
        // Guessing keys from one address is throttled: past a burst of failures, 429.
        let ip = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
        if ip.is_some_and(|ip| !app.ip_guards.bad_key(ip)) {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many failed keys; slow down",
            ));
        }
        Err(ApiError::unauthorized())
    }
}

/// Largest server-API body; the API's bodies are small objects.
pub(super) const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A JSON body, decoded by `decode_body`; larger than `MAX_BODY_BYTES` answers 413.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, ApiError> {
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("bodies are at most {MAX_BODY_BYTES} bytes"),
            )
        };
        // Refused before a byte of it is read: a client announcing 10 MB is answered at once.
        let announced = request.headers().get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok());
        if announced.and_then(|v| v.parse::<usize>().ok()).is_some_and(|n| n > MAX_BODY_BYTES) {
            return Err(too_large());
        }
        let bytes = axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES).await.map_err(|e| {
            // The limit's error is the cause of axum's.
            match std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>()) {
                true => too_large(),
                false => {
                    ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", format!("the body could not be read: {e}"))
                }
            }
        })?;
        decode_body(&bytes).map(JsonBody)
    }
}

/// The one place a server-API body is decoded: bytes that are not JSON answer 400
/// `invalid_json`; text with a NUL character (which the database cannot store) 400
/// `invalid_field`; JSON of the wrong shape 422 `invalid_body`, naming the field.
pub fn decode_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::bad_body(e),
        _ => ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", format!("the body is not JSON: {e}")),
    })?;
    if crate::protocols::has_nul(&value) {
        return Err(ApiError::bad_field("body", crate::protocols::NUL_REFUSED));
    }
    serde_json::from_value(value).map_err(ApiError::bad_body)
}

/// A user as the API answers it.
#[derive(Serialize, ToSchema)]
pub struct UserView {
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
pub struct SessionView {
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
pub struct UserBody {
    #[schema(min_length = 1, max_length = 150, pattern = "\\S")]
    username: String,
    email: Option<String>,
    display_name: Option<String>,
    /// `false` closes the user's open sockets on every node (4002); default `true`.
    is_active: Option<bool>,
}

/// Creates or updates a user (idempotent).
#[utoipa::path(put, path = "/api/v1/users/{id}", tag = "users", params(("id" = String, Path, description = "the user's id", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    request_body = UserBody, security(("api_key" = [])),
    responses((status = 200, description = "the user as stored", body = UserView), BadField, Unauthorized, BodyErrors, KeyThrottled, Unavailable))]
pub async fn put_user(
    State(app): State<AppState>,
    Path(id): Path<String>,
    _backend: Backend,
    JsonBody(body): JsonBody<UserBody>,
) -> Result<Json<UserView>, ApiError> {
    let id = UserId::parse(&id).map_err(|e| ApiError::bad_field("id", e))?;
    if body.username.trim().is_empty() || body.username.chars().count() > 150 {
        return Err(ApiError::bad_field("username", "must be 1-150 characters"));
    }
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
        super::publish(&app, &Group::control(), Envelope::to_all(event)).await?;
    }
    Ok(Json(UserView::new(&stored)))
}

#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users", params(("id" = String, Path, description = "the user's id", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    security(("api_key" = [])),
    responses((status = 200, description = "the user", body = UserView), BadField, Unauthorized, NotFound, KeyThrottled, Unavailable))]
pub async fn get_user(
    State(app): State<AppState>,
    Path(id): Path<String>,
    _backend: Backend,
) -> Result<Json<UserView>, ApiError> {
    let id = UserId::parse(&id).map_err(|e| ApiError::bad_field("id", e))?;
    let user = app.store.user(&id).await?.ok_or_else(|| ApiError::not_found("user"))?;
    Ok(Json(UserView::new(&user)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionBody {
    #[schema(value_type = String, pattern = "^[A-Za-z0-9_-]{1,64}$")]
    inviter_id: UserId,
    #[schema(value_type = String, pattern = "^[A-Za-z0-9_-]{1,64}$")]
    invitee_id: UserId,
}

/// Creates a direct session between two users, or replaces its participants (idempotent).
#[utoipa::path(put, path = "/api/v1/sessions/{id}", tag = "sessions", params(("id" = String, Path, description = "the session's id", format = Uuid)),
    request_body = SessionBody, security(("api_key" = [])),
    responses((status = 200, description = "the session as stored", body = SessionView), BadField, Unauthorized, BodyErrors, KeyThrottled, Unavailable))]
pub async fn put_session(
    State(app): State<AppState>,
    Path(id): Path<String>,
    _backend: Backend,
    JsonBody(body): JsonBody<SessionBody>,
) -> Result<Json<SessionView>, ApiError> {
    let id = SessionId::parse(&id).map_err(|e| ApiError::bad_field("id", e))?;
    app.store.upsert_session(&id, &body.inviter_id, &body.invitee_id).await?;
    super::membership_changed(&app, Group::session(&id)).await?;
    let session = app.store.session(&id).await?.ok_or_else(|| ApiError::not_found("session"))?;
    Ok(Json(SessionView::new(&session)))
}

#[utoipa::path(get, path = "/api/v1/sessions/{id}", tag = "sessions", params(("id" = String, Path, description = "the session's id", format = Uuid)),
    security(("api_key" = [])),
    responses((status = 200, description = "the session", body = SessionView), Unauthorized, NotFound, KeyThrottled, Unavailable))]
pub async fn get_session(
    State(app): State<AppState>,
    Path(id): Path<String>,
    _backend: Backend,
) -> Result<Json<SessionView>, ApiError> {
    let id = SessionId::parse(&id).map_err(|_| ApiError::not_found("session"))?;
    let session = app.store.session(&id).await?.ok_or_else(|| ApiError::not_found("session"))?;
    Ok(Json(SessionView::new(&session)))
}

/// A page of history: newest first.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// How many messages, 1-200 (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 200)]
    limit: Option<String>,
    /// Only messages older than this message id (the last of the previous page).
    #[param(value_type = Option<String>, format = Uuid)]
    before: Option<String>,
}

/// The query of a history route, read by hand: a query axum could not read (a repeated
/// parameter, bytes that are not UTF-8) answers 400 `invalid_field` like any other bad value.
pub struct HistoryParams(pub HistoryQuery);

impl<S: Send + Sync> FromRequestParts<S> for HistoryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(query) = axum::extract::Query::<HistoryQuery>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_field("query", e.body_text()))?;
        Ok(Self(query))
    }
}

impl HistoryQuery {
    pub(super) fn page(&self) -> Result<Page, ApiError> {
        let limit = match &self.limit {
            None => DEFAULT_PAGE,
            Some(raw) => match raw.parse::<i64>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
                _ => return Err(ApiError::bad_field("limit", format!("must be an integer from 1 to {MAX_PAGE}"))),
            },
        };
        let before = match &self.before {
            None => None,
            Some(raw) => Some(MessageId::parse(raw).map_err(|e| ApiError::bad_field("before", e))?),
        };
        Ok(Page { limit, before })
    }
}

/// Who calls a history route: `None` for the backend's key, else the user of a valid token
/// (of an active user).
pub(super) async fn history_caller(app: &AppState, headers: &HeaderMap) -> Result<Option<UserId>, ApiError> {
    if is_backend(app, headers) {
        return Ok(None);
    }
    let token = bearer(headers).ok_or_else(ApiError::unauthorized)?;
    let user_id = app.verifier.verify(token).map_err(|_| ApiError::unauthorized())?.user_id;
    // As on the socket: a token of an unknown or deactivated user opens nothing.
    match app.store.user(&user_id).await? {
        Some(user) if user.is_active => Ok(Some(user_id)),
        _ => Err(ApiError::unauthorized()),
    }
}

/// A session's history, newest first, each item shaped like the `message` frame. Open to the
/// backend's key and to a participant's own JWT; anyone else gets 404 (no leak).
#[utoipa::path(get, path = "/api/v1/sessions/{id}/messages", tag = "sessions",
    params(("id" = String, Path, description = "the session's id", format = Uuid), HistoryQuery),
    security(("api_key" = []), ("user_jwt" = [])),
    responses((status = 200, description = "a page of messages", body = SessionHistory), BadField, Unauthorized, NotFound, Unavailable))]
pub async fn session_messages(
    State(app): State<AppState>,
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
pub struct SessionHistory<'a> {
    messages: Vec<MessageFrame<'a>>,
}

/// A chat's history: newest first.
#[derive(Serialize, ToSchema)]
pub struct ChatHistory<'a> {
    messages: Vec<MessageData<'a>>,
}

/// A chat (chat.txt) as the API answers it.
#[derive(Serialize, ToSchema)]
pub struct ChatView {
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
pub struct MembersBody {
    #[schema(value_type = Vec<String>)]
    member_ids: Vec<UserId>,
}

/// Creates the chat or replaces its members (idempotent); sockets of removed members leave it.
#[utoipa::path(put, path = "/api/v1/chats/{id}", tag = "chats", params(("id" = String, Path, description = "the chat's id", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    request_body = MembersBody, security(("api_key" = [])),
    responses((status = 200, description = "the chat as stored", body = ChatView), BadField, Unauthorized, BodyErrors, KeyThrottled, Unavailable))]
pub async fn put_chat(
    State(app): State<AppState>,
    Path(id): Path<String>,
    _backend: Backend,
    JsonBody(body): JsonBody<MembersBody>,
) -> Result<Json<ChatView>, ApiError> {
    let id = ChatId::parse(&id).map_err(|e| ApiError::bad_field("id", e))?;
    app.store.upsert_chat(&id, &body.member_ids).await?;
    super::membership_changed(&app, Group::chat(&id)).await?;
    let chat = app.store.chat(&id).await?.ok_or_else(|| ApiError::not_found("chat"))?;
    Ok(Json(ChatView::new(&chat)))
}

#[utoipa::path(get, path = "/api/v1/chats/{id}", tag = "chats", params(("id" = String, Path, description = "the chat's id", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    security(("api_key" = [])),
    responses((status = 200, description = "the chat", body = ChatView), Unauthorized, NotFound, KeyThrottled, Unavailable))]
pub async fn get_chat(
    State(app): State<AppState>,
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
pub async fn chat_messages(
    State(app): State<AppState>,
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
