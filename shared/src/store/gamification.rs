//! Gamification state: activities (counted once by id), per-user stats, and the outbox of award
//! notifications. The rules live in the worker and reach the store as a `Scorer`, so that stats
//! are read, scored and written inside the batch's transaction.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::NaiveDate;
use serde_json::Value;
use sqlx::Row;

use super::codec::DbTime;
use super::onetask::NewNotification;
use super::{corrupt, on_pool, Store, StoreError};
use crate::event::Notification;
use crate::ids::UserId;
use crate::jobs::Activity;
use crate::time;

/// A user's standing. A new user is at level 1 with nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserStats {
    pub points: i64,
    pub level: i64,
    pub messages: i64,
    pub tasks_completed: i64,
    pub focus_completed: i64,
    pub current_streak: i64,
    pub longest_streak: i64,
    /// The last UTC day with any activity.
    pub last_active_day: Option<NaiveDate>,
    pub unlocked: BTreeSet<i64>,
    /// Where the window of the message points cap starts (Unix seconds), and the message points
    /// counted in it.
    pub message_window_start: i64,
    pub message_window_points: i64,
}

impl Default for UserStats {
    fn default() -> Self {
        Self {
            points: 0,
            level: 1,
            messages: 0,
            tasks_completed: 0,
            focus_completed: 0,
            current_streak: 0,
            longest_streak: 0,
            last_active_day: None,
            unlocked: BTreeSet::new(),
            message_window_start: 0,
            message_window_points: 0,
        }
    }
}

/// Applies one new activity to a user's stats; returns the new stats and the award
/// notifications to store (and publish) with them.
pub trait Scorer: Send + Sync {
    fn score(&self, stats: &UserStats, activity: &Activity) -> (UserStats, Vec<NewNotification>);
}

/// The new activities of a batch, in order, each once.
pub(super) fn fresh<'a>(activities: &'a [Activity], recorded: &HashSet<String>) -> Vec<&'a Activity> {
    let mut seen = HashSet::new();
    activities.iter().filter(|a| recorded.contains(&a.id) && seen.insert(a.id.clone())).collect()
}

/// Scores `activities` in order against `stats`; returns the notifications they earned.
pub(super) fn score_all(
    scorer: &dyn Scorer,
    stats: &mut BTreeMap<UserId, UserStats>,
    activities: &[&Activity],
) -> Vec<NewNotification> {
    let mut earned = Vec::new();
    for activity in activities {
        let current = stats.entry(activity.user_id.clone()).or_default();
        let (next, notifications) = scorer.score(current, activity);
        *current = next;
        earned.extend(notifications);
    }
    earned
}

pub(super) fn unlocked_json(unlocked: &BTreeSet<i64>) -> String {
    serde_json::to_string(unlocked).expect("ids serialize")
}

pub(super) fn stats_from_row(row: &impl StatsRow) -> Result<(UserId, UserStats), StoreError> {
    row.read()
}

/// Reading a `user_stats` row from either backend.
pub(super) trait StatsRow {
    fn read(&self) -> Result<(UserId, UserStats), StoreError>;
}

macro_rules! stats_row {
    ($row:ty, $day:expr) => {
        impl StatsRow for $row {
            fn read(&self) -> Result<(UserId, UserStats), StoreError> {
                let user: String = self.try_get("user_id")?;
                let unlocked: String = self.try_get("unlocked")?;
                Ok((
                    UserId::parse(&user).map_err(|_| corrupt("user id"))?,
                    UserStats {
                        points: self.try_get("points")?,
                        level: self.try_get("level")?,
                        messages: self.try_get("messages")?,
                        tasks_completed: self.try_get("tasks_completed")?,
                        focus_completed: self.try_get("focus_completed")?,
                        current_streak: self.try_get("current_streak")?,
                        longest_streak: self.try_get("longest_streak")?,
                        last_active_day: $day(self)?,
                        unlocked: serde_json::from_str(&unlocked).map_err(|_| corrupt("unlocked"))?,
                        message_window_start: self.try_get("message_window_start")?,
                        message_window_points: self.try_get("message_window_points")?,
                    },
                ))
            }
        }
    };
}

stats_row!(sqlx::postgres::PgRow, |r: &sqlx::postgres::PgRow| r.try_get::<Option<NaiveDate>, _>("last_active_day"));
stats_row!(sqlx::sqlite::SqliteRow, |r: &sqlx::sqlite::SqliteRow| -> Result<Option<NaiveDate>, sqlx::Error> {
    let day: Option<String> = r.try_get("last_active_day")?;
    Ok(day.and_then(|d| NaiveDate::parse_from_str(&d, "%Y-%m-%d").ok()))
});

fn json_column(raw: Option<String>) -> Option<Value> {
    raw.and_then(|text| serde_json::from_str(&text).ok())
}

impl Store {
    /// A user's stats (defaults for a user with no activity yet).
    pub async fn user_stats(&self, user: &UserId) -> Result<UserStats, StoreError> {
        let found = on_pool!(self, |pool| sqlx::query("SELECT * FROM user_stats WHERE user_id = $1")
            .bind(user.as_str())
            .fetch_optional(pool)
            .await?
            .map(|r| stats_from_row(&r))
            .transpose()?);
        Ok(found.map(|(_, s)| s).unwrap_or_default())
    }

    /// Claims up to `limit` award notifications not yet delivered and not claimed by a live
    /// worker, for `lease`: publish them, then `mark_delivered`. A worker that dies in between
    /// leaves the lease to run out, and the next claim returns them again (same ids).
    pub async fn claim_undelivered(
        &self,
        limit: i64,
        lease: std::time::Duration,
    ) -> Result<Vec<Notification>, StoreError> {
        let now = time::now();
        let until = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
        // Two workers never claim the same row: PostgreSQL skips rows another claim has locked;
        // SQLite has one writer at a time.
        let skip_locked = match self {
            Store::Postgres(_) => "FOR UPDATE SKIP LOCKED",
            Store::Sqlite(_) => "",
        };
        let sql = format!(
            "UPDATE notifications SET claimed_until = $3 WHERE id IN (
                 SELECT id FROM notifications
                 WHERE NOT delivered AND (claimed_until IS NULL OR claimed_until < $2)
                 ORDER BY id LIMIT $1 {skip_locked})
             RETURNING id, user_id, kind, title, content, notification_type, related_entity_type,
                       related_entity_id, data, created_at"
        );
        let mut claimed: Vec<Notification> = on_pool!(self, |pool| sqlx::query(&sql)
            .bind(limit)
            .bind(DbTime(now))
            .bind(DbTime(until))
            .fetch_all(pool)
            .await?
            .into_iter()
            .map(|r| {
                let user: String = r.try_get("user_id")?;
                Ok(Notification {
                    notification_id: r.try_get("id")?,
                    user_id: UserId::parse(&user).map_err(|_| corrupt("user id"))?,
                    wire_type: r.try_get("kind")?,
                    title: r.try_get("title")?,
                    content: r.try_get("content")?,
                    notification_type: r.try_get("notification_type")?,
                    related_entity_type: r.try_get("related_entity_type")?,
                    related_entity_id: json_column(r.try_get("related_entity_id")?),
                    data: json_column(r.try_get("data")?),
                    created_at: r.try_get::<DbTime, _>("created_at")?.0,
                })
            })
            .collect::<Result<_, StoreError>>()?);
        claimed.sort_by_key(|n| n.notification_id);
        Ok(claimed)
    }

    /// Claimed notifications were published: never again.
    pub async fn mark_delivered(&self, ids: &[i64]) -> Result<(), StoreError> {
        self.set_claims(ids, "delivered = TRUE, claimed_until = NULL").await
    }

    /// Claimed notifications could not be published: free for the next claim at once.
    pub async fn release_undelivered(&self, ids: &[i64]) -> Result<(), StoreError> {
        self.set_claims(ids, "claimed_until = NULL").await
    }

    async fn set_claims(&self, ids: &[i64], set: &str) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let sql = format!("UPDATE notifications SET {set} WHERE id = $1");
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            for id in ids {
                sqlx::query(&sql).bind(id).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok::<_, StoreError>(())
        })
    }

    /// How many notifications of `kind` a user has (for tests and operators).
    pub async fn notification_count(&self, user: &UserId, kind: &str) -> Result<i64, StoreError> {
        Ok(on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT count(*) FROM notifications WHERE user_id = $1 AND kind = $2"
        )
        .bind(user.as_str())
        .bind(kind)
        .fetch_one(pool)
        .await?))
    }
}
