//! OneTask's server side and the publish API (PROTOCOL.md "The server side"): workspaces and
//! focus sessions (members), notifications (persisted, integer ids), task events, and
//! `POST /api/v1/publish`. Ids a backend sends may be strings or integers and keep their type.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use shared::event::{Envelope, Event, Group, TaskUpdate};
use shared::ids::{FocusSessionId, UserId, WorkspaceId};
use shared::jobs::{Activity, ActivityKind, Job};
use shared::store::NewNotification;

use super::api::{Backend, JsonBody};
use super::error::ApiError;
use crate::app::AppState;

const TASK_ACTIONS: [&str; 4] = ["created", "updated", "completed", "deleted"];

/// An id given as a JSON string or integer, as text (for group names).
fn id_text(field: &str, value: &Value) -> Result<String, ApiError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        _ => Err(ApiError::bad_field(field, "must be a string or an integer")),
    }
}

async fn publish(app: &AppState, group: &Group, event: Event) -> Result<(), ApiError> {
    super::publish(app, group, Envelope::to_all(event)).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceBody {
    member_ids: Vec<UserId>,
}

/// `PUT /api/v1/workspaces/{id}`
pub async fn put_workspace(
    State(app): State<AppState>,
    Path(id): Path<String>,
    _backend: Backend,
    JsonBody(body): JsonBody<WorkspaceBody>,
) -> Result<Json<Value>, ApiError> {
    let id = WorkspaceId::parse(&id).map_err(|e| ApiError::bad_field("id", e))?;
    app.store.set_workspace_members(&id, &body.member_ids).await?;
    super::membership_changed(&app, Group::workspace(&id)).await?;
    Ok(Json(json!({"id": id, "member_ids": body.member_ids})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FocusBody {
    participant_ids: Vec<UserId>,
}

/// `PUT /api/v1/focus-sessions/{id}`: creates the session (idle) or replaces its participants.
pub async fn put_focus_session(
    State(app): State<AppState>,
    Path(id): Path<String>,
    _backend: Backend,
    JsonBody(body): JsonBody<FocusBody>,
) -> Result<Json<Value>, ApiError> {
    let id = FocusSessionId::parse(&id).map_err(|e| ApiError::bad_field("id", e))?;
    app.store.upsert_focus_session(&id, &body.participant_ids).await?;
    super::membership_changed(&app, Group::focus(&id)).await?;
    let state = app.store.focus_state(&id).await?.unwrap_or_else(shared::event::FocusState::idle);
    Ok(Json(json!({
        "id": id,
        "participant_ids": body.participant_ids,
        "status": state.status.as_str(),
        "remaining_seconds": state.remaining_at(shared::time::now()),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationBody {
    user_id: Value,
    title: String,
    content: String,
    notification_type: String,
    related_entity_type: Option<String>,
    related_entity_id: Option<Value>,
    data: Option<Value>,
}

/// `POST /api/v1/notifications`: persisted, then delivered as `notification` to the user.
pub async fn post_notification(
    State(app): State<AppState>,
    _backend: Backend,
    JsonBody(body): JsonBody<NotificationBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
    Ok((StatusCode::CREATED, Json(json!({"notification_id": id}))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskEventBody {
    workspace_id: Value,
    task_id: Value,
    title: String,
    action: String,
    actor_id: Value,
    data: Option<Value>,
}

/// `POST /api/v1/task-events`: `task_update` to the workspace.
pub async fn post_task_event(
    State(app): State<AppState>,
    _backend: Backend,
    JsonBody(body): JsonBody<TaskEventBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
            })),
            Err(_) => tracing::info!("task completed by an actor that is not a user id; no points"),
        }
    }
    let event = Envelope::to_all(Event::TaskUpdate(update));
    super::publish_all(&app, &[(Group::workspace(&workspace), event)], &jobs).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"status": "published"}))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishBody {
    group: String,
    event: Value,
}

/// `POST /api/v1/publish`: the event object, delivered as-is to every socket of the group.
pub async fn post_publish(
    State(app): State<AppState>,
    _backend: Backend,
    JsonBody(body): JsonBody<PublishBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let group = Group::parse(&body.group).ok_or_else(|| {
        ApiError::bad_field("group", "must be session:ID, chat:ID, channel:ID, user:ID, workspace:ID or focus:ID")
    })?;
    if !body.event.is_object() {
        return Err(ApiError::bad_field("event", "must be a JSON object"));
    }
    publish(&app, &group, Event::Raw { event: body.event }).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"status": "published"}))))
}
