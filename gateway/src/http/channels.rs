//! Pythia's server side (PROTOCOL.md): channels and their members (backend key), and the
//! messages and reactions API (a user's own JWT). Messages are persisted, then broadcast.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::event::{ChannelMessage, Envelope, Event, Group};
use shared::ids::{ChannelId, MessageId, UserId};
use shared::jobs::Job;
use shared::store::{ChannelRecord, UserRecord};
use utoipa::ToSchema;

use super::bounds;
use super::error::ApiError;
use super::extract::{bearer, history_caller, Backend, HistoryParams, HistoryQuery, JsonBody};
use super::responses::{
    BadField, BodyErrors, Conflict, IdempotencyKey, KeyThrottled, NotFound, Unauthorized, Unavailable, UserThrottled,
};
use crate::node::Node;
use crate::protocols::pythia::{may_see, MessageData};

/// A channel (pythia.md) as the API answers it.
#[derive(Serialize, ToSchema)]
pub(crate) struct ChannelView {
    #[schema(value_type = String)]
    id: ChannelId,
    name: String,
    private: bool,
    #[schema(value_type = Vec<String>)]
    member_ids: Vec<UserId>,
}

impl ChannelView {
    fn new(c: &ChannelRecord) -> Self {
        Self { id: c.id.clone(), name: c.name.clone(), private: c.private, member_ids: c.member_ids.clone() }
    }
}

/// One membership after a change.
#[derive(Serialize, ToSchema)]
pub(crate) struct MemberView {
    #[schema(value_type = String)]
    channel_id: ChannelId,
    #[schema(value_type = String)]
    user_id: UserId,
    /// Whether the user is a member now.
    member: bool,
}

/// A channel's history: newest first.
#[derive(Serialize, ToSchema)]
pub(crate) struct ChannelHistory<'a> {
    messages: Vec<MessageData<'a>>,
}

fn channel_id(raw: &str) -> Result<ChannelId, ApiError> {
    ChannelId::parse(raw).map_err(|e| ApiError::bad_field("id", e))
}

/// `user_joined` / `user_left` for a membership change, to everyone in the channel's room.
fn membership_event(channel: &ChannelId, user: UserId, joined: bool) -> (Group, Envelope) {
    let event = Event::RoomChange { channel_id: channel.clone(), user_id: user, joined };
    (Group::channel(channel), Envelope::to_all(event))
}

/// Who may be in the channel's room changed: every node re-checks its sockets there first (a
/// removed user is out of a private room before the others hear `user_left`).
fn recheck(channel: &ChannelId) -> (Group, Envelope) {
    (Group::control(), Envelope::to_all(Event::MembershipChanged { group: Group::channel(channel) }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChannelBody {
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    name: String,
    /// A private channel is seen by its members only.
    #[serde(default)]
    private: bool,
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    member_ids: Vec<UserId>,
}

/// `PUT /api/v1/channels/{id}`: creates or updates a channel and replaces its members; each
/// member added or removed is announced to the channel (`user_joined` / `user_left`).
#[utoipa::path(put, path = "/api/v1/channels/{id}", tag = "channels", params(("id" = String, Path, description = "the channel's id", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    request_body = ChannelBody, security(("api_key" = [])),
    responses((status = 200, description = "the channel as stored", body = ChannelView), BadField, Unauthorized, BodyErrors, KeyThrottled, Unavailable))]
pub(crate) async fn put_channel(
    State(app): State<Node>,
    Path(id): Path<String>,
    _backend: Backend,
    JsonBody(body): JsonBody<ChannelBody>,
) -> Result<Json<ChannelView>, ApiError> {
    let id = channel_id(&id)?;
    if body.name.trim().is_empty() {
        return Err(ApiError::bad_field("name", "must not be empty"));
    }
    bounds::text_within("name", &body.name, bounds::CHANNEL_NAME)?;
    let change = app.store.upsert_channel(&id, &body.name, body.private, &body.member_ids).await?;
    let mut events = vec![recheck(&id)];
    events.extend(change.added.into_iter().map(|user| membership_event(&id, user, true)));
    events.extend(change.removed.into_iter().map(|user| membership_event(&id, user, false)));
    super::publish::publish_all(&app, &events, &[]).await?;
    let channel = app.store.channel(&id).await?.ok_or_else(|| ApiError::not_found("channel"))?;
    Ok(Json(ChannelView::new(&channel)))
}

#[utoipa::path(get, path = "/api/v1/channels/{id}", tag = "channels", params(("id" = String, Path, description = "the channel's id", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    security(("api_key" = [])),
    responses((status = 200, description = "the channel", body = ChannelView), BadField, Unauthorized, NotFound, KeyThrottled, Unavailable))]
pub(crate) async fn get_channel(
    State(app): State<Node>,
    Path(id): Path<String>,
    _backend: Backend,
) -> Result<Json<ChannelView>, ApiError> {
    let channel = app.store.channel(&channel_id(&id)?).await?.ok_or_else(|| ApiError::not_found("channel"))?;
    Ok(Json(ChannelView::new(&channel)))
}

async fn member_change(app: &Node, id: &str, user: &str, add: bool) -> Result<Json<MemberView>, ApiError> {
    let id = channel_id(id)?;
    let user = UserId::parse(user).map_err(|e| ApiError::bad_field("user_id", e))?;
    app.store.channel(&id).await?.ok_or_else(|| ApiError::not_found("channel"))?;
    let changed = if add {
        app.store.add_channel_member(&id, &user).await?
    } else {
        app.store.remove_channel_member(&id, &user).await?
    };
    if changed {
        super::publish::publish_all(app, &[recheck(&id), membership_event(&id, user.clone(), add)], &[]).await?;
    }
    Ok(Json(MemberView { channel_id: id, user_id: user, member: add }))
}

/// Adds a member; the channel hears `user_joined`.
#[utoipa::path(put, path = "/api/v1/channels/{id}/members/{user_id}", tag = "channels",
    params(("id" = String, Path, description = "the channel's id", pattern = "^[A-Za-z0-9_-]{1,64}$"), ("user_id" = String, Path, description = "the user's id", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    security(("api_key" = [])),
    responses((status = 200, description = "the membership", body = MemberView), BadField, Unauthorized, NotFound, KeyThrottled, Unavailable))]
pub(crate) async fn put_member(
    State(app): State<Node>,
    _backend: Backend,
    Path((id, user)): Path<(String, String)>,
) -> Result<Json<MemberView>, ApiError> {
    member_change(&app, &id, &user, true).await
}

/// Removes a member: their sockets leave a private channel at once; the channel hears `user_left`.
#[utoipa::path(delete, path = "/api/v1/channels/{id}/members/{user_id}", tag = "channels",
    params(("id" = String, Path, description = "the channel's id", pattern = "^[A-Za-z0-9_-]{1,64}$"), ("user_id" = String, Path, description = "the user's id", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    security(("api_key" = [])),
    responses((status = 200, description = "the membership", body = MemberView), BadField, Unauthorized, NotFound, KeyThrottled, Unavailable))]
pub(crate) async fn delete_member(
    State(app): State<Node>,
    _backend: Backend,
    Path((id, user)): Path<(String, String)>,
) -> Result<Json<MemberView>, ApiError> {
    member_change(&app, &id, &user, false).await
}

/// A channel's history, newest first, in Pythia's camelCase `new_message.data`. Open to the
/// backend's key and to the JWT of a user who may see the channel; others get 404.
#[utoipa::path(get, path = "/api/v1/channels/{id}/messages", tag = "channels",
    params(("id" = String, Path, description = "the channel's id", pattern = "^[A-Za-z0-9_-]{1,64}$"), HistoryQuery),
    security(("api_key" = []), ("user_jwt" = [])),
    responses((status = 200, description = "a page of messages", body = ChannelHistory), BadField, Unauthorized, NotFound, Unavailable))]
pub(crate) async fn channel_messages(
    State(app): State<Node>,
    Path(id): Path<String>,
    HistoryParams(query): HistoryParams,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let page = query.page()?;
    let caller = history_caller(&app, &headers).await?;
    let id = ChannelId::parse(&id).map_err(|_| ApiError::not_found("channel"))?;
    let channel = app.store.channel(&id).await?.ok_or_else(|| ApiError::not_found("channel"))?;
    if caller.is_some_and(|user| !may_see(&channel, &user)) {
        return Err(ApiError::not_found("channel"));
    }
    let messages = app.store.channel_messages(&id, page).await?;
    let history = ChannelHistory { messages: messages.iter().map(MessageData::new).collect() };
    Ok(Json(serde_json::to_value(history).expect("serializes")))
}

/// The active user of the bearer JWT.
async fn user_caller(app: &Node, headers: &HeaderMap) -> Result<UserRecord, ApiError> {
    let token = bearer(headers).ok_or_else(ApiError::unauthorized)?;
    let claims = app.verifier.verify(token).map_err(|_| ApiError::unauthorized())?;
    match app.store.user(&claims.user_id).await? {
        Some(user) if user.is_active => Ok(user),
        _ => Err(ApiError::unauthorized()),
    }
}

/// The usernames after `@` in `content`, once each.
fn mentioned(content: &str) -> Vec<String> {
    let mut names: Vec<String> = content
        .split('@')
        .skip(1)
        .map(|rest| {
            rest.chars().take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')).collect::<String>()
        })
        .map(|name| name.trim_end_matches('.').to_owned())
        .filter(|name| !name.is_empty())
        .collect();
    names.sort();
    names.dedup();
    names
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MessageBody {
    #[schema(value_type = String, pattern = "^[A-Za-z0-9_-]{1,64}$")]
    channel_id: ChannelId,
    /// 1-4000 characters once trimmed.
    #[schema(min_length = 1, max_length = 4000, pattern = "\\S")]
    content: String,
}

/// A user posts to a channel they may see, with their own JWT. Broadcast as `new_message` with
/// the job that persists it, then stored; each mentioned member gets `mention_notification`.
#[utoipa::path(post, path = "/api/v1/messages", tag = "channels", request_body = MessageBody,
    params(IdempotencyKey), security(("user_jwt" = [])),
    responses((status = 201, description = "the message as stored and broadcast", body = MessageData), BadField, Unauthorized, NotFound, Conflict, BodyErrors, UserThrottled, Unavailable))]
pub(crate) async fn post_message(
    State(app): State<Node>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<MessageBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let user = user_caller(&app, &headers).await?;
    if let Err(wait) = app.post_rate.check(&user.id) {
        return Err(ApiError::rate_limited("too many messages from this user; slow down", wait));
    }
    let content = body.content.trim();
    if content.is_empty() {
        return Err(ApiError::bad_field("content", "must not be empty"));
    }
    bounds::text_within("content", content, bounds::MESSAGE_CONTENT)?;
    let channel = app.store.channel(&body.channel_id).await?.filter(|c| may_see(c, &user.id));
    let channel = channel.ok_or_else(|| ApiError::not_found("channel"))?;
    let message = ChannelMessage {
        message_id: MessageId::new(),
        channel_id: channel.id.clone(),
        user_id: user.id.clone(),
        username: user.username.clone(),
        email: user.email.clone(),
        content: content.to_owned(),
        created_at: shared::time::now(),
    };
    let mut events = vec![(Group::channel(&channel.id), Envelope::to_all(Event::ChannelMessage(message.clone())))];
    for mentioned in app.store.members_named(&channel.id, &mentioned(content)).await? {
        if mentioned != user.id {
            events.push((Group::user(&mentioned), Envelope::to_all(Event::Mention { message: message.clone() })));
        }
    }
    // Broadcast first, with the job that stores the message, in one atomic step (with the
    // mentions); then store it here too, so that the 201 means it is in the history. A 503 leaves
    // nothing half done: either the publish never ran (no message anywhere), or it ran and only
    // its answer was lost, and then the job stores what was seen live. A store failure after a
    // good publish is no failure of the request: the job stores it once the database answers.
    let job = Job::ChannelMessage(message.clone());
    super::publish::publish_all(&app, &events, &[job]).await?;
    if let Err(e) = app.store.insert_channel_message(&message).await {
        tracing::warn!(error = %e, message = %message.message_id, "channel message left to the worker to store");
    }
    let stored = serde_json::to_value(MessageData::new(&message)).expect("serializes");
    Ok((StatusCode::CREATED, Json(stored)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReactionBody {
    #[schema(value_type = String, format = Uuid)]
    message_id: MessageId,
    /// 1-32 characters once trimmed.
    #[schema(min_length = 1, max_length = 32, pattern = "\\S")]
    emoji: String,
    action: ReactionAction,
}

#[derive(Deserialize, Serialize, ToSchema, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum ReactionAction {
    Add,
    Remove,
}

/// A reaction as stored.
#[derive(Serialize, ToSchema)]
pub(crate) struct ReactionView {
    #[schema(value_type = String, format = Uuid)]
    message_id: MessageId,
    #[schema(value_type = String)]
    channel_id: ChannelId,
    emoji: String,
    #[schema(value_type = String)]
    user_id: UserId,
    action: ReactionAction,
}

/// Adds or removes the caller's reaction (their own JWT); a change is broadcast to the
/// message's channel as `message_reaction`.
#[utoipa::path(post, path = "/api/v1/messages/reactions", tag = "channels", request_body = ReactionBody,
    params(IdempotencyKey), security(("user_jwt" = [])),
    responses((status = 201, description = "the reaction", body = ReactionView), BadField, Unauthorized, NotFound, Conflict, BodyErrors, Unavailable))]
pub(crate) async fn post_reaction(
    State(app): State<Node>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<ReactionBody>,
) -> Result<(StatusCode, Json<ReactionView>), ApiError> {
    let user = user_caller(&app, &headers).await?;
    let emoji = body.emoji.trim();
    if emoji.is_empty() {
        return Err(ApiError::bad_field("emoji", "must not be empty"));
    }
    bounds::text_within("emoji", emoji, bounds::EMOJI)?;
    let channel_id =
        app.store.channel_of_message(&body.message_id).await?.ok_or_else(|| ApiError::not_found("message"))?;
    let channel = app.store.channel(&channel_id).await?.filter(|c| may_see(c, &user.id));
    channel.ok_or_else(|| ApiError::not_found("message"))?;
    let add = body.action == ReactionAction::Add;
    if app.store.set_reaction(&body.message_id, &user.id, emoji, add).await? {
        let event = Event::Reaction {
            message_id: body.message_id,
            channel_id: channel_id.clone(),
            emoji: emoji.to_owned(),
            user_id: user.id.clone(),
            username: user.username.clone(),
            added: add,
        };
        if let Err(e) = super::publish::publish(&app, &Group::channel(&channel_id), Envelope::to_all(event)).await {
            // Not broadcast: undo, so that a 503 leaves the reactions as they were.
            app.store.set_reaction(&body.message_id, &user.id, emoji, !add).await?;
            return Err(e);
        }
    }
    let stored = ReactionView {
        message_id: body.message_id,
        channel_id,
        emoji: emoji.to_owned(),
        user_id: user.id,
        action: body.action,
    };
    Ok((StatusCode::CREATED, Json(stored)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_mentions() {
        assert_eq!(super::mentioned("Hey @john_doe, check this out! cc @ann.lee. @john_doe"), ["ann.lee", "john_doe"]);
        assert!(super::mentioned("mail me at @ or a@").is_empty());
    }
}
