//! OneTask: workspace members, focus sessions (participants and the shared timer) and
//! notifications. Each query is written once for both backends.

use serde_json::Value;

use super::codec::DbTime;
use super::members::Members;
use super::{corrupt, on_pool, Store, StoreError};
use crate::event::{FocusState, FocusStatus, Notification};
use crate::ids::{FocusSessionId, UserId, WorkspaceId};
use crate::time;

/// How long a notification stored by the server API stays claimed by that request while it is
/// published (see `Store::insert_notification`).
const PUBLISH_LEASE_SECS: i64 = 30;

/// A notification to store; the database assigns its id and time.
#[derive(Debug, Clone)]
pub struct NewNotification {
    pub user_id: UserId,
    pub wire_type: String,
    pub title: String,
    pub content: String,
    pub notification_type: String,
    pub related_entity_type: Option<String>,
    pub related_entity_id: Option<Value>,
    pub data: Option<Value>,
}

impl Store {
    /// Replaces a workspace's members.
    pub async fn set_workspace_members(&self, id: &WorkspaceId, members: &[UserId]) -> Result<(), StoreError> {
        self.set_members(Members::Workspace, id.as_str(), members).await
    }

    pub async fn is_workspace_member(&self, id: &WorkspaceId, user: &UserId) -> Result<bool, StoreError> {
        self.is_member(Members::Workspace, id.as_str(), user).await
    }

    /// Creates the focus session (idle) if it is new, and replaces its participants.
    pub async fn upsert_focus_session(&self, id: &FocusSessionId, participants: &[UserId]) -> Result<(), StoreError> {
        let now = DbTime(time::now());
        on_pool!(self, |pool| sqlx::query(
            "INSERT INTO focus_sessions (id, updated_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING"
        )
        .bind(id.as_str())
        .bind(now)
        .execute(pool)
        .await
        .map(drop))?;
        self.set_members(Members::Focus, id.as_str(), participants).await
    }

    pub async fn is_focus_participant(&self, id: &FocusSessionId, user: &UserId) -> Result<bool, StoreError> {
        self.is_member(Members::Focus, id.as_str(), user).await
    }

    pub async fn focus_participants(&self, id: &FocusSessionId) -> Result<Vec<UserId>, StoreError> {
        let ids: Vec<String> =
            on_pool!(self, |pool| sqlx::query_scalar("SELECT user_id FROM focus_participants WHERE session_id = $1")
                .bind(id.as_str())
                .fetch_all(pool)
                .await?);
        ids.iter().map(|u| UserId::parse(u).map_err(|_| corrupt("user id"))).collect()
    }

    pub async fn focus_state(&self, id: &FocusSessionId) -> Result<Option<FocusState>, StoreError> {
        let row: Option<(String, i64, Option<DbTime>, i64)> = on_pool!(self, |pool| sqlx::query_as(
            "SELECT status, remaining_seconds, ends_at, ran_seconds FROM focus_sessions WHERE id = $1"
        )
        .bind(id.as_str())
        .fetch_optional(pool)
        .await?);
        row.map(|(status, remaining_seconds, ends_at, ran_seconds)| {
            Ok(FocusState {
                status: FocusStatus::parse(&status).ok_or_else(|| corrupt("focus status"))?,
                remaining_seconds,
                ends_at: ends_at.map(|t| t.0),
                ran_seconds,
            })
        })
        .transpose()
    }

    /// Replaces the timer state with `next` only if it is still `seen` (compare-and-set, so two
    /// participants acting at once on two nodes cannot both win). True if it was replaced.
    pub async fn swap_focus_state(
        &self,
        id: &FocusSessionId,
        seen: &FocusState,
        next: &FocusState,
    ) -> Result<bool, StoreError> {
        let now = DbTime(time::now());
        let done = on_pool!(self, |pool| sqlx::query(
            "UPDATE focus_sessions SET status = $2, remaining_seconds = $3, ends_at = $4, updated_at = $8,
                                       ran_seconds = $9
             WHERE id = $1 AND status = $5 AND remaining_seconds = $6 AND ends_at IS NOT DISTINCT FROM $7"
        )
        .bind(id.as_str())
        .bind(next.status.as_str())
        .bind(next.remaining_seconds)
        .bind(next.ends_at.map(DbTime))
        .bind(seen.status.as_str())
        .bind(seen.remaining_seconds)
        .bind(seen.ends_at.map(DbTime))
        .bind(now)
        .bind(next.ran_seconds)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(done == 1)
    }

    /// Stores a notification, not yet delivered and claimed for a short lease by the caller,
    /// who publishes it and then calls `mark_delivered` (or `delete_notification` if it could
    /// not). A caller that dies in between leaves the claim to run out; a worker then publishes
    /// it. Returns it with its integer id and time.
    pub async fn insert_notification(&self, n: NewNotification) -> Result<Notification, StoreError> {
        let related = n.related_entity_id.as_ref().map(Value::to_string);
        let data = n.data.as_ref().map(Value::to_string);
        let created_at = time::now();
        let claimed_until = DbTime(created_at + chrono::Duration::seconds(PUBLISH_LEASE_SECS));
        let id: i64 = on_pool!(self, |pool| sqlx::query_scalar(
            "INSERT INTO notifications (user_id, kind, title, content, notification_type, related_entity_type,
                                        related_entity_id, data, created_at, delivered, claimed_until)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, FALSE, $10) RETURNING id"
        )
        .bind(n.user_id.as_str())
        .bind(&n.wire_type)
        .bind(&n.title)
        .bind(&n.content)
        .bind(&n.notification_type)
        .bind(&n.related_entity_type)
        .bind(&related)
        .bind(&data)
        .bind(DbTime(created_at))
        .bind(claimed_until)
        .fetch_one(pool)
        .await?);
        Ok(Notification {
            notification_id: id,
            user_id: n.user_id,
            wire_type: n.wire_type,
            title: n.title,
            content: n.content,
            notification_type: n.notification_type,
            related_entity_type: n.related_entity_type,
            related_entity_id: n.related_entity_id,
            data: n.data,
            created_at,
        })
    }

    /// Removes a notification that could not be published (the request that made it failed).
    pub async fn delete_notification(&self, id: i64) -> Result<(), StoreError> {
        on_pool!(self, |pool| sqlx::query("DELETE FROM notifications WHERE id = $1")
            .bind(id)
            .execute(pool)
            .await
            .map(drop))?;
        Ok(())
    }
}
