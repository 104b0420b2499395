//! The server API (PROTOCOL.md "The server side"): backends call it with
//! `Authorization: Bearer <GATEWAY_API_KEY>`. `PUT`s are idempotent upserts. Bodies are parsed
//! here so that a bad one is answered with JSON that names the field.

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use shared::event::{Envelope, Event, Group};
use shared::ids::{ChatId, MessageId, SessionId, UserId};
use shared::store::{ChatRecord, Page, SessionRecord, UserRecord};

use super::error::ApiError;
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
            return Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many failed keys; slow down"));
        }
        Err(ApiError::unauthorized())
    }
}

/// Largest server-API body; the API's bodies are small objects.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A JSON body, decoded by `decode_body`; larger than `MAX_BODY_BYTES` answers 413.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, ApiError> {
        let too_large = || {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("bodies are at most {MAX_BODY_BYTES} bytes"))
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
                false => ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", format!("the body could not be read: {e}")),
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

fn user_json(user: &UserRecord) -> Value {
    json!({
        "id": user.id,
        "username": user.username,
        "email": user.email,
        "display_name": user.display_name,
        "is_active": user.is_active,
        "created_at": user.created_at.as_ref().map(shared::time::format),
    })
}

fn session_json(session: &SessionRecord) -> Value {
    json!({
        "id": session.id,
        "inviter_id": session.inviter_id,
        "invitee_id": session.invitee_id,
        "last_message_at": session.last_message_at.as_ref().map(shared::time::format),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserBody {
    username: String,
    email: Option<String>,
    display_name: Option<String>,
    is_active: Option<bool>,
}

pub async fn put_user(
    State(app): State<AppState>,
    Path(id): Path<String>,
    _backend: Backend,
    JsonBody(body): JsonBody<UserBody>,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(user_json(&stored)))
}

pub async fn get_user(
    State(app): State<AppState>,
    Path(id): Path<String>,
    _backend: Backend,
) -> Result<Json<Value>, ApiError> {
    let id = UserId::parse(&id).map_err(|e| ApiError::bad_field("id", e))?;
    let user = app.store.user(&id).await?.ok_or_else(|| ApiError::not_found("user"))?;
    Ok(Json(user_json(&user)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionBody {
    inviter_id: UserId,
    invitee_id: UserId,
}

pub async fn put_session(
    State(app): State<AppState>,
    Path(id): Path<String>,
    _backend: Backend,
    JsonBody(body): JsonBody<SessionBody>,
) -> Result<Json<Value>, ApiError> {
    let id = SessionId::parse(&id).map_err(|e| ApiError::bad_field("id", e))?;
    app.store.upsert_session(&id, &body.inviter_id, &body.invitee_id).await?;
    super::membership_changed(&app, Group::session(&id)).await?;
    let session = app.store.session(&id).await?.ok_or_else(|| ApiError::not_found("session"))?;
    Ok(Json(session_json(&session)))
}

pub async fn get_session(
    State(app): State<AppState>,
    Path(id): Path<String>,
    _backend: Backend,
) -> Result<Json<Value>, ApiError> {
    let id = SessionId::parse(&id).map_err(|_| ApiError::not_found("session"))?;
    let session = app.store.session(&id).await?.ok_or_else(|| ApiError::not_found("session"))?;
    Ok(Json(session_json(&session)))
}

#[derive(Deserialize)]
pub struct HistoryQuery {
    limit: Option<String>,
    before: Option<String>,
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

/// `GET /api/v1/sessions/{id}/messages`: newest first, each item shaped like the `message` frame.
/// Open to the backend's key and to a participant's own JWT; anyone else gets 404 (no leak).
pub async fn session_messages(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HistoryQuery>,
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
    let items: Vec<Value> =
        messages.iter().map(|m| serde_json::to_value(MessageFrame::new(m)).expect("frames serialize")).collect();
    Ok(Json(json!({ "messages": items })))
}

fn chat_json(chat: &ChatRecord) -> Value {
    json!({
        "id": chat.id,
        "member_ids": chat.member_ids,
        "last_message_at": chat.last_message_at.as_ref().map(shared::time::format),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembersBody {
    member_ids: Vec<UserId>,
}

/// `PUT /api/v1/chats/{id}`: creates the chat or replaces its members.
pub async fn put_chat(
    State(app): State<AppState>,
    Path(id): Path<String>,
    _backend: Backend,
    JsonBody(body): JsonBody<MembersBody>,
) -> Result<Json<Value>, ApiError> {
    let id = ChatId::parse(&id).map_err(|e| ApiError::bad_field("id", e))?;
    app.store.upsert_chat(&id, &body.member_ids).await?;
    super::membership_changed(&app, Group::chat(&id)).await?;
    let chat = app.store.chat(&id).await?.ok_or_else(|| ApiError::not_found("chat"))?;
    Ok(Json(chat_json(&chat)))
}

pub async fn get_chat(
    State(app): State<AppState>,
    Path(id): Path<String>,
    _backend: Backend,
) -> Result<Json<Value>, ApiError> {
    let id = ChatId::parse(&id).map_err(|_| ApiError::not_found("chat"))?;
    let chat = app.store.chat(&id).await?.ok_or_else(|| ApiError::not_found("chat"))?;
    Ok(Json(chat_json(&chat)))
}

/// `GET /api/v1/chats/{id}/messages`: newest first, each item shaped like `new_message.data`;
/// direct messages are not part of a chat's history.
pub async fn chat_messages(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HistoryQuery>,
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
    let items: Vec<Value> =
        messages.iter().map(|m| serde_json::to_value(MessageData::new(m)).expect("frames serialize")).collect();
    Ok(Json(json!({ "messages": items })))
}
