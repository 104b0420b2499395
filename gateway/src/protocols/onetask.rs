//! OneTask (onetask.md): `/ws/notifications` (`user:{id}`), `/ws/tasks/{workspace_id}`
//! (`workspace:{id}`) and `/ws/focus/{session_id}` (`focus:{id}`, a shared focus timer).
//!
//! Server → client: `notification` and the gamification events in the guide's shapes,
//! `task_update`, `focus_update`. Client → server: `focus_action` on the focus socket only.
//! The timer's state lives in the database and changes by compare-and-set, so participants on
//! different nodes acting at once see one consistent sequence.

use axum::extract::ws::Utf8Bytes;
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use shared::event::{Envelope, Event, FocusState, FocusStatus, Group, Notification};
use shared::ids::{FocusSessionId, UserId};
use shared::jobs::{Activity, ActivityKind, Job};

use crate::errors::ClientError;
use crate::node::Node;

/// The longest focus session a client may start.
pub(crate) const MAX_FOCUS_SECONDS: i64 = 24 * 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FocusAction {
    Start { duration_seconds: i64 },
    Pause,
    Resume,
    Complete,
}

impl FocusAction {
    pub(crate) fn name(self) -> &'static str {
        match self {
            FocusAction::Start { .. } => "start",
            FocusAction::Pause => "pause",
            FocusAction::Resume => "resume",
            FocusAction::Complete => "complete",
        }
    }
}

/// The frame a focus session's client sends (onetask.md).
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Frame {
    FocusAction {
        action: String,
        #[serde(default, deserialize_with = "duration_seconds")]
        duration_seconds: Option<i64>,
    },
}

const DURATION_RULE: &str = "\"duration_seconds\" must be an integer from 1 to 86400";
// The rule's text names the bound.
const _: () = assert!(MAX_FOCUS_SECONDS == 86400);

fn duration_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    super::frame::optional_integer(d, DURATION_RULE)
}

pub(crate) fn decode_focus(text: &str) -> Result<FocusAction, ClientError> {
    let Frame::FocusAction { action, duration_seconds } = super::frame::decode(text)?;
    match action.as_str() {
        "start" => match duration_seconds {
            Some(n @ 1..=MAX_FOCUS_SECONDS) => Ok(FocusAction::Start { duration_seconds: n }),
            _ => Err(ClientError::invalid_payload(DURATION_RULE)),
        },
        "pause" => Ok(FocusAction::Pause),
        "resume" => Ok(FocusAction::Resume),
        "complete" => Ok(FocusAction::Complete),
        other => Err(ClientError::invalid_payload(format!(
            "\"action\" must be start, pause, resume or complete, not {other:?}"
        ))),
    }
}

/// The timer after `action` at `now`, or why the action does not apply.
pub(crate) fn transition(
    state: &FocusState,
    action: FocusAction,
    now: DateTime<Utc>,
) -> Result<FocusState, &'static str> {
    use FocusStatus::*;
    let left = state.remaining_at(now);
    // How long the timer has run in all, the current stretch included.
    let ran = match state.status {
        Running => state.ran_seconds + (state.remaining_seconds - left).max(0),
        _ => state.ran_seconds,
    };
    match (action, state.status) {
        (FocusAction::Start { duration_seconds }, Idle | Completed) => Ok(FocusState {
            status: Running,
            remaining_seconds: duration_seconds,
            ends_at: Some(now + Duration::seconds(duration_seconds)),
            ran_seconds: 0,
        }),
        (FocusAction::Start { .. }, _) => Err("the session has already started"),
        (FocusAction::Pause, Running) => {
            Ok(FocusState { status: Paused, remaining_seconds: left, ends_at: None, ran_seconds: ran })
        }
        (FocusAction::Pause, _) => Err("only a running session can be paused"),
        (FocusAction::Resume, Paused) => Ok(FocusState {
            status: Running,
            remaining_seconds: state.remaining_seconds,
            ends_at: Some(now + Duration::seconds(state.remaining_seconds)),
            ran_seconds: ran,
        }),
        (FocusAction::Resume, _) => Err("only a paused session can be resumed"),
        (FocusAction::Complete, Running | Paused) => {
            Ok(FocusState { status: Completed, remaining_seconds: 0, ends_at: None, ran_seconds: ran })
        }
        (FocusAction::Complete, _) => Err("only a running or paused session can be completed"),
    }
}

fn notification_frame(n: &Notification) -> Value {
    let mut frame = Map::new();
    frame.insert("type".into(), json!(n.wire_type));
    frame.insert("notification_id".into(), json!(n.notification_id));
    frame.insert("title".into(), json!(n.title));
    frame.insert("content".into(), json!(n.content));
    frame.insert("notification_type".into(), json!(n.notification_type));
    if let Some(t) = &n.related_entity_type {
        frame.insert("related_entity_type".into(), json!(t));
    }
    if let Some(id) = &n.related_entity_id {
        frame.insert("related_entity_id".into(), id.clone());
    }
    frame.insert("created_at".into(), json!(shared::time::format(&n.created_at)));
    frame.insert("data".into(), n.data.clone().unwrap_or_else(|| json!({})));
    Value::Object(frame)
}

/// `focus_update`, with `remaining_seconds` as of `now`.
fn focus_frame(
    session_id: &FocusSessionId,
    action: &str,
    actor: Option<&UserId>,
    state: &FocusState,
    now: DateTime<Utc>,
) -> Value {
    json!({
        "type": "focus_update",
        "session_id": session_id,
        "action": action,
        "actor_id": actor,
        "status": state.status.as_str(),
        "remaining_seconds": state.remaining_at(now),
        "timestamp": shared::time::format(&now),
    })
}

pub(crate) fn render(event: &Event) -> Option<String> {
    let frame = match event {
        Event::Notification(n) => notification_frame(n),
        Event::TaskUpdate(t) => json!({
            "type": "task_update",
            "task_id": t.task_id,
            "title": t.title,
            "action": t.action,
            "workspace_id": t.workspace_id,
            "actor_id": t.actor_id,
            "timestamp": shared::time::format(&t.timestamp),
            "data": t.data.clone().unwrap_or_else(|| json!({})),
        }),
        Event::FocusUpdate { session_id, action, actor_id, state } => {
            focus_frame(session_id, action, actor_id.as_ref(), state, shared::time::now())
        }
        _ => return None,
    };
    Some(frame.to_string())
}

/// Which OneTask socket this is.
pub(crate) enum OneTaskSocket {
    /// `/ws/notifications` and `/ws/tasks/{id}`: the server talks, the client listens.
    Listener,
    /// `/ws/focus/{id}`: the shared timer.
    Focus { session_id: FocusSessionId, group: Group, user: UserId },
}

impl OneTaskSocket {
    /// The jobs that make a completed focus session count for every participant (once per
    /// completion: this node made the one transition to `completed`). Published with the
    /// `focus_update` itself, so that both go out or neither.
    async fn completion_jobs(&self, app: &Node, session_id: &FocusSessionId, ran_seconds: i64) -> Vec<bytes::Bytes> {
        let participants = match app.store.focus_participants(session_id).await {
            Ok(participants) => participants,
            Err(e) => {
                tracing::warn!(error = %e, "focus completion not recorded");
                return Vec::new();
            }
        };
        let at = shared::time::now();
        participants
            .into_iter()
            .map(|user_id| {
                let id = format!("focus:{session_id}:{}:{user_id}", shared::time::format(&at));
                let activity = ActivityKind::FocusCompleted;
                Job::Activity(Activity { id, user_id, activity, at, ran_seconds: Some(ran_seconds) }).encode()
            })
            .collect()
    }

    /// On the focus socket, the timer as it is now (`focus_update` with action `state`).
    pub(crate) async fn greeting(&self, app: &Node) -> Option<Utf8Bytes> {
        let OneTaskSocket::Focus { session_id, .. } = self else { return None };
        let state = match app.store.focus_state(session_id).await {
            Ok(state) => state.unwrap_or_else(FocusState::idle),
            Err(e) => {
                tracing::warn!(error = %e, "focus state unavailable for the greeting");
                return None;
            }
        };
        Some(Utf8Bytes::from(focus_frame(session_id, "state", None, &state, shared::time::now()).to_string()))
    }

    pub(crate) async fn on_text(&self, app: &Node, text: &str) -> Result<(), ClientError> {
        let OneTaskSocket::Focus { session_id, group, user } = self else {
            // The notification and task sockets take no frames: every type is unknown there.
            return Err(ClientError::unknown_type(super::frame::kind_of(text)?.as_deref()));
        };
        let action = decode_focus(text)?;
        let unavailable = |e: shared::store::StoreError| {
            tracing::error!(error = %e, "focus state update failed");
            ClientError::unavailable()
        };
        // Compare-and-set: if another participant changed the timer meanwhile, decide again.
        for _ in 0..5 {
            let seen = app.store.focus_state(session_id).await.map_err(unavailable)?.unwrap_or_else(FocusState::idle);
            let next = transition(&seen, action, shared::time::now()).map_err(ClientError::invalid_payload)?;
            if app.store.swap_focus_state(session_id, &seen, &next).await.map_err(unavailable)? {
                let jobs = match next.status {
                    FocusStatus::Completed => self.completion_jobs(app, session_id, next.ran_seconds).await,
                    _ => Vec::new(),
                };
                let event = Event::FocusUpdate {
                    session_id: session_id.clone(),
                    action: action.name().to_owned(),
                    actor_id: Some(user.clone()),
                    state: next,
                };
                return app
                    .broker
                    .publish_all(&[(group.clone(), Envelope::to_all(event).encode())], &jobs)
                    .await
                    .map_err(|e| super::publish::publish_failed(app, e));
            }
        }
        Err(ClientError::unavailable())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn the_timer_runs_pauses_resumes_and_completes() {
        let idle = FocusState::idle();
        let running = transition(&idle, FocusAction::Start { duration_seconds: 1500 }, at(0)).unwrap();
        assert_eq!((running.status, running.remaining_at(at(100))), (FocusStatus::Running, 1400));
        let paused = transition(&running, FocusAction::Pause, at(100)).unwrap();
        assert_eq!((paused.status, paused.remaining_at(at(900))), (FocusStatus::Paused, 1400));
        let resumed = transition(&paused, FocusAction::Resume, at(900)).unwrap();
        assert_eq!(resumed.remaining_at(at(1000)), 1300);
        assert_eq!(resumed.remaining_at(at(99_999)), 0, "never below zero");
        let done = transition(&resumed, FocusAction::Complete, at(1000)).unwrap();
        assert_eq!((done.status, done.remaining_at(at(1000))), (FocusStatus::Completed, 0));
        assert_eq!(done.ran_seconds, 200, "100 s before the pause, 100 s after the resume");
        let at_once = transition(
            &transition(&idle, FocusAction::Start { duration_seconds: 1500 }, at(0)).unwrap(),
            FocusAction::Complete,
            at(0),
        )
        .unwrap();
        assert_eq!(at_once.ran_seconds, 0);
    }

    #[test]
    fn actions_that_do_not_apply_are_refused() {
        let idle = FocusState::idle();
        assert!(transition(&idle, FocusAction::Pause, at(0)).is_err());
        assert!(transition(&idle, FocusAction::Resume, at(0)).is_err());
        assert!(transition(&idle, FocusAction::Complete, at(0)).is_err());
        let running = transition(&idle, FocusAction::Start { duration_seconds: 60 }, at(0)).unwrap();
        assert!(transition(&running, FocusAction::Start { duration_seconds: 60 }, at(1)).is_err());
        assert!(transition(&running, FocusAction::Resume, at(1)).is_err());
    }

    #[test]
    fn decodes_focus_actions() {
        assert_eq!(
            decode_focus(r#"{"type":"focus_action","action":"start","duration_seconds":1500}"#).unwrap(),
            FocusAction::Start { duration_seconds: 1500 }
        );
        assert!(decode_focus(r#"{"type":"focus_action","action":"start"}"#).is_err());
        assert!(decode_focus(r#"{"type":"focus_action","action":"start","duration_seconds":0}"#).is_err());
        assert!(decode_focus(r#"{"type":"focus_action","action":"nap"}"#).is_err());
    }
}
