//! OneTask's server side and the publish API (PROTOCOL.md "The server side"): workspaces and
//! focus sessions (members), notifications (persisted, integer ids), task events, and
//! `POST /api/v1/publish`. Ids a backend sends may be strings or integers and keep their type.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::event::{Envelope, Event, Group, TaskUpdate};
use shared::ids::{FocusSessionId, UserId, WorkspaceId};
use shared::jobs::{Activity, ActivityKind, Job};
use shared::store::NewNotification;
use utoipa::ToSchema;

use super::bounds;
use super::error::ApiError;
use super::extract::{Backend, JsonBody};
use super::responses::{BadField, BodyErrors, Conflict, IdempotencyKey, KeyThrottled, Unauthorized, Unavailable};
use crate::node::Node;

const TASK_ACTIONS: [&str; 4] = ["created", "updated", "completed", "deleted"];

/// An id given as a JSON string or integer, as text (for group names).
fn id_text(field: &str, value: &Value) -> Result<String, ApiError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        _ => Err(ApiError::bad_field(field, "must be a string or an integer")),
    }
}

async fn publish(app: &Node, group: &Group, event: Event) -> Result<(), ApiError> {
    super::publish::publish(app, group, Envelope::to_all(event)).await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WorkspaceBody {
    #[schema(value_type = Vec<String>)]
    member_ids: Vec<UserId>,
}

/// A workspace (onetask.md) as stored.
#[derive(Serialize, ToSchema)]
pub(crate) struct WorkspaceView {
    #[schema(value_type = String)]
    id: WorkspaceId,
    #[schema(value_type = Vec<String>)]
    member_ids: Vec<UserId>,
}

/// Sets a workspace's members (idempotent); sockets of removed members leave it.
#[utoipa::path(put, path = "/api/v1/workspaces/{id}", tag = "onetask", params(("id" = String, Path, description = "the workspace's id", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    request_body = WorkspaceBody, security(("api_key" = [])),
    responses((status = 200, description = "the workspace as stored", body = WorkspaceView), BadField, Unauthorized, BodyErrors, KeyThrottled, Unavailable))]
pub(crate) async fn put_workspace(
    State(app): State<Node>,
    Path(id): Path<String>,
    _backend: Backend,
    JsonBody(body): JsonBody<WorkspaceBody>,
) -> Result<Json<WorkspaceView>, ApiError> {
    let id = WorkspaceId::parse(&id).map_err(|e| ApiError::bad_field("id", e))?;
    app.store.set_workspace_members(&id, &body.member_ids).await?;
    super::publish::membership_changed(&app, Group::workspace(&id)).await?;
    Ok(Json(WorkspaceView { id, member_ids: body.member_ids }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FocusBody {
    #[schema(value_type = Vec<String>)]
    participant_ids: Vec<UserId>,
}

/// A focus session (onetask.md) as stored, with its timer.
#[derive(Serialize, ToSchema)]
pub(crate) struct FocusSessionView {
    #[schema(value_type = String)]
    id: FocusSessionId,
    #[schema(value_type = Vec<String>)]
    participant_ids: Vec<UserId>,
    /// `idle`, `running`, `paused` or `completed`.
    status: &'static str,
    remaining_seconds: i64,
}

/// Creates a focus session (idle) or replaces its participants (idempotent).
#[utoipa::path(put, path = "/api/v1/focus-sessions/{id}", tag = "onetask", params(("id" = String, Path, description = "the focus session's id", pattern = "^[A-Za-z0-9_-]{1,64}$")),
    request_body = FocusBody, security(("api_key" = [])),
    responses((status = 200, description = "the focus session as stored", body = FocusSessionView), BadField, Unauthorized, BodyErrors, KeyThrottled, Unavailable))]
pub(crate) async fn put_focus_session(
    State(app): State<Node>,
    Path(id): Path<String>,
    _backend: Backend,
    JsonBody(body): JsonBody<FocusBody>,
) -> Result<Json<FocusSessionView>, ApiError> {
    let id = FocusSessionId::parse(&id).map_err(|e| ApiError::bad_field("id", e))?;
    app.store.upsert_focus_session(&id, &body.participant_ids).await?;
    super::publish::membership_changed(&app, Group::focus(&id)).await?;
    let state = app.store.focus_state(&id).await?.unwrap_or_else(shared::event::FocusState::idle);
    Ok(Json(FocusSessionView {
        id,
        participant_ids: body.participant_ids,
        status: state.status.as_str(),
        remaining_seconds: state.remaining_at(shared::time::now()),
    }))
}

/// An id a backend may give as a string or an integer; it keeps its type on the wire.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[schema(as = FlexibleId)]
#[allow(dead_code)]
enum FlexibleIdSchema {
    Text(String),
    Number(i64),
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NotificationBody {
    #[schema(value_type = FlexibleIdSchema)]
    user_id: Value,
    #[schema(pattern = "\\S", max_length = 200)]
    title: String,
    #[schema(max_length = 4000)]
    content: String,
    #[schema(pattern = "\\S", max_length = 64)]
    notification_type: String,
    #[schema(max_length = 64)]
    related_entity_type: Option<String>,
    #[schema(value_type = Option<FlexibleIdSchema>)]
    related_entity_id: Option<Value>,
    /// Any JSON object, delivered as given.
    #[schema(value_type = Option<Object>)]
    data: Option<Value>,
}

/// The id a notification was stored under.
#[derive(Serialize, ToSchema)]
pub(crate) struct NotificationCreated {
    notification_id: i64,
}

/// Stores a notification, then delivers it to the user's sockets as `notification`.
#[utoipa::path(post, path = "/api/v1/notifications", tag = "onetask", request_body = NotificationBody,
    params(IdempotencyKey), security(("api_key" = [])),
    responses((status = 201, description = "stored and delivered", body = NotificationCreated), BadField, Unauthorized, Conflict, BodyErrors, KeyThrottled, Unavailable))]
pub(crate) async fn post_notification(
    State(app): State<Node>,
    _backend: Backend,
    JsonBody(body): JsonBody<NotificationBody>,
) -> Result<(StatusCode, Json<NotificationCreated>), ApiError> {
    let user_id = UserId::parse(&id_text("user_id", &body.user_id)?).map_err(|e| ApiError::bad_field("user_id", e))?;
    if let Some(related) = &body.related_entity_id {
        id_text("related_entity_id", related)?;
    }
    if body.data.as_ref().is_some_and(|d| !d.is_object()) {
        return Err(ApiError::bad_field("data", "must be an object"));
    }
    for (field, value) in [("title", &body.title), ("notification_type", &body.notification_type)] {
        if value.trim().is_empty() {
            return Err(ApiError::bad_field(field, "must not be empty"));
        }
    }
    bounds::text_within("title", &body.title, bounds::NOTIFICATION_TITLE)?;
    bounds::text_within("content", &body.content, bounds::NOTIFICATION_CONTENT)?;
    bounds::text_within("notification_type", &body.notification_type, bounds::NOTIFICATION_KIND)?;
    let related_type = body.related_entity_type.as_deref().unwrap_or_default();
    bounds::text_within("related_entity_type", related_type, bounds::NOTIFICATION_KIND)?;
    let stored = app
        .store
        .insert_notification(NewNotification {
            user_id: user_id.clone(),
            wire_type: "notification".into(),
            title: body.title,
            content: body.content,
            notification_type: body.notification_type,
            related_entity_type: body.related_entity_type,
            related_entity_id: body.related_entity_id,
            data: body.data,
        })
        .await?;
    // Stored claimed by this request: published, then marked delivered; a failed publish takes
    // it back out (503, nothing left behind); a crash in between leaves it to the worker.
    let id = stored.notification_id;
    if let Err(e) = publish(&app, &Group::user(&user_id), Event::Notification(stored)).await {
        app.store.delete_notification(id).await?;
        return Err(e);
    }
    if let Err(e) = app.store.mark_delivered(&[id]).await {
        // Published all the same: the worker publishes it once more, with the same id.
        tracing::warn!(error = %e, id, "notification published but not marked delivered");
    }
    Ok((StatusCode::CREATED, Json(NotificationCreated { notification_id: id })))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TaskEventBody {
    #[schema(value_type = FlexibleIdSchema)]
    workspace_id: Value,
    #[schema(value_type = FlexibleIdSchema)]
    task_id: Value,
    title: String,
    /// `created`, `updated`, `completed` or `deleted`.
    #[schema(pattern = "^(created|updated|completed|deleted)$")]
    action: String,
    #[schema(value_type = FlexibleIdSchema)]
    actor_id: Value,
    #[schema(value_type = Option<Object>)]
    data: Option<Value>,
}

/// The answer of a publishing route.
#[derive(Serialize, ToSchema)]
pub(crate) struct Published {
    /// Always `published`.
    #[schema(example = "published")]
    status: &'static str,
}

const PUBLISHED: Published = Published { status: "published" };

/// Publishes `task_update` to the workspace's sockets.
#[utoipa::path(post, path = "/api/v1/task-events", tag = "onetask", request_body = TaskEventBody,
    params(IdempotencyKey), security(("api_key" = [])),
    responses((status = 202, description = "published", body = Published), BadField, Unauthorized, Conflict, BodyErrors, KeyThrottled, Unavailable))]
pub(crate) async fn post_task_event(
    State(app): State<Node>,
    _backend: Backend,
    JsonBody(body): JsonBody<TaskEventBody>,
) -> Result<(StatusCode, Json<Published>), ApiError> {
    let workspace = WorkspaceId::parse(&id_text("workspace_id", &body.workspace_id)?)
        .map_err(|e| ApiError::bad_field("workspace_id", e))?;
    let task = id_text("task_id", &body.task_id)?;
    let actor = id_text("actor_id", &body.actor_id)?;
    if !TASK_ACTIONS.contains(&body.action.as_str()) {
        return Err(ApiError::bad_field("action", "must be created, updated, completed or deleted"));
    }
    if body.data.as_ref().is_some_and(|d| !d.is_object()) {
        return Err(ApiError::bad_field("data", "must be an object"));
    }
    let update = TaskUpdate {
        task_id: body.task_id,
        title: body.title,
        action: body.action,
        workspace_id: body.workspace_id,
        actor_id: body.actor_id,
        data: body.data,
        timestamp: shared::time::now(),
    };
    // A completed task earns its actor points, once per task (completing it again earns nothing):
    // its job goes out with the update, or neither does.
    let mut jobs = Vec::new();
    if update.action == "completed" {
        match UserId::parse(&actor) {
            Ok(user_id) => jobs.push(Job::Activity(Activity {
                id: format!("task:{workspace}:{task}"),
                user_id,
                activity: ActivityKind::TaskCompleted,
                at: update.timestamp,
                ran_seconds: None,
            })),
            Err(_) => tracing::info!("task completed by an actor that is not a user id; no points"),
        }
    }
    let event = Envelope::to_all(Event::TaskUpdate(update));
    super::publish::publish_all(&app, &[(Group::workspace(&workspace), event)], &jobs).await?;
    Ok((StatusCode::ACCEPTED, Json(PUBLISHED)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PublishBody {
    /// `session:ID`, `chat:ID`, `channel:ID`, `user:ID`, `workspace:ID` or `focus:ID`.
    #[schema(example = "workspace:42", pattern = "^(session|chat|channel|user|workspace|focus):[A-Za-z0-9_-]{1,64}$")]
    group: String,
    /// Any JSON object: delivered as-is to every socket of the group, after the gateway's own
    /// `seq` (and `resume` on a socket that asked for resume tokens). Those two top-level names
    /// are reserved: an event carrying either is refused with 400 naming it.
    #[schema(value_type = Object)]
    event: Value,
}

/// Publishes an event object, as-is, to every socket of a group.
#[utoipa::path(post, path = "/api/v1/publish", tag = "publish", request_body = PublishBody,
    params(IdempotencyKey), security(("api_key" = [])),
    responses((status = 202, description = "published", body = Published), BadField, Unauthorized, Conflict, BodyErrors, KeyThrottled, Unavailable))]
pub(crate) async fn post_publish(
    State(app): State<Node>,
    _backend: Backend,
    JsonBody(body): JsonBody<PublishBody>,
) -> Result<(StatusCode, Json<Published>), ApiError> {
    let group = Group::parse(&body.group).ok_or_else(|| {
        ApiError::bad_field("group", "must be session:ID, chat:ID, channel:ID, user:ID, workspace:ID or focus:ID")
    })?;
    if !body.event.is_object() {
        return Err(ApiError::bad_field("event", "must be a JSON object"));
    }
    bounds::event_fields_free(&body.event)?;
    publish(&app, &group, Event::Raw { event: body.event }).await?;
    Ok((StatusCode::ACCEPTED, Json(PUBLISHED)))
}
