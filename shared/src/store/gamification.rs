//! Gamification state: activities (counted once by id), per-user stats, and the outbox of award
//! notifications. The rules live in the worker and reach the store as a `Scorer`, so that stats
//! are read, scored and written inside the batch's transaction.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::NaiveDate;
use serde_json::Value;
use sqlx::Row;

use super::onetask::NewNotification;
use super::{corrupt, Store, StoreError};
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

/// A claimed notification row: id, user, kind, title, content, type, related type, related id,
/// data, created_at (as text).
type NotificationRow =
    (i64, String, String, String, String, String, Option<String>, Option<String>, Option<String>, String);

fn json_column(raw: Option<String>) -> Option<Value> {
    raw.and_then(|text| serde_json::from_str(&text).ok())
}

impl Store {
    /// A user's stats (defaults for a user with no activity yet).
    pub async fn user_stats(&self, user: &UserId) -> Result<UserStats, StoreError> {
        let found = match self {
            Store::Postgres(pool) => sqlx::query("SELECT * FROM user_stats WHERE user_id = $1")
                .bind(user.as_str())
                .fetch_optional(pool)
                .await?
                .map(|r| stats_from_row(&r))
                .transpose()?,
            Store::Sqlite(pool) => sqlx::query("SELECT * FROM user_stats WHERE user_id = ?1")
                .bind(user.as_str())
                .fetch_optional(pool)
                .await?
                .map(|r| stats_from_row(&r))
                .transpose()?,
        };
        Ok(found.map(|(_, s)| s).unwrap_or_default())
    }

    /// Claims up to `limit` award notifications not yet delivered and not claimed by a live
    /// worker, for `lease`: publish them, then `mark_delivered`. A worker that dies in between
    /// leaves the lease to run out, and the next claim returns them again (same ids).
    pub async fn claim_undelivered(&self, limit: i64, lease: std::time::Duration) -> Result<Vec<Notification>, StoreError> {
        const COLUMNS: &str =
            "id, user_id, kind, title, content, notification_type, related_entity_type, related_entity_id, data";
        let rows: Vec<NotificationRow> = match self {
            Store::Postgres(pool) => {
                let rows = sqlx::query(&format!(
                        "UPDATE notifications SET claimed_until = now() + $2 * interval '1 millisecond' WHERE id IN (
                             SELECT id FROM notifications
                             WHERE NOT delivered AND (claimed_until IS NULL OR claimed_until < now())
                             ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
                         RETURNING {COLUMNS}, created_at"
                    ))
                    .bind(limit)
                    .bind(lease.as_millis() as f64)
                    .fetch_all(pool)
                    .await?;
                rows.into_iter()
                    .map(|r| {
                        let at: chrono::DateTime<chrono::Utc> = r.try_get("created_at")?;
                        Ok((
                            r.try_get("id")?,
                            r.try_get("user_id")?,
                            r.try_get("kind")?,
                            r.try_get("title")?,
                            r.try_get("content")?,
                            r.try_get("notification_type")?,
                            r.try_get("related_entity_type")?,
                            r.try_get("related_entity_id")?,
                            r.try_get("data")?,
                            time::format(&at),
                        ))
                    })
                    .collect::<Result<_, sqlx::Error>>()?
            }
            Store::Sqlite(pool) => {
                let rows = sqlx::query(&format!(
                    "UPDATE notifications SET claimed_until = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?2) WHERE id IN (
                             SELECT id FROM notifications
                             WHERE NOT delivered
                               AND (claimed_until IS NULL OR claimed_until < strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
                             ORDER BY id LIMIT ?1)
                         RETURNING {COLUMNS}, created_at"
                ))
                .bind(limit)
                .bind(format!("+{:.3} seconds", lease.as_secs_f64()))
                .fetch_all(pool)
                .await?;
                rows.into_iter()
                    .map(|r| {
                        Ok((
                            r.try_get("id")?,
                            r.try_get("user_id")?,
                            r.try_get("kind")?,
                            r.try_get("title")?,
                            r.try_get("content")?,
                            r.try_get("notification_type")?,
                            r.try_get("related_entity_type")?,
                            r.try_get("related_entity_id")?,
                            r.try_get("data")?,
                            r.try_get("created_at")?,
                        ))
                    })
                    .collect::<Result<_, sqlx::Error>>()?
            }
        };
        let mut claimed: Vec<Notification> = rows
            .into_iter()
            .map(|(id, user, kind, title, content, ntype, rtype, rid, data, at)| {
                Ok(Notification {
                    notification_id: id,
                    user_id: UserId::parse(&user).map_err(|_| corrupt("user id"))?,
                    wire_type: kind,
                    title,
                    content,
                    notification_type: ntype,
                    related_entity_type: rtype,
                    related_entity_id: json_column(rid),
                    data: json_column(data),
                    created_at: time::parse(&at).ok_or_else(|| corrupt("created_at"))?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
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
        match self {
            Store::Postgres(pool) => {
                sqlx::query(&format!("UPDATE notifications SET {set} WHERE id = ANY($1)")).bind(ids).execute(pool).await?;
            }
            Store::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                for id in ids {
                    sqlx::query(&format!("UPDATE notifications SET {set} WHERE id = ?1")).bind(id).execute(&mut *tx).await?;
                }
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// How many notifications of `kind` a user has (for tests and operators).
    pub async fn notification_count(&self, user: &UserId, kind: &str) -> Result<i64, StoreError> {
        Ok(match self {
            Store::Postgres(pool) => {
                sqlx::query_scalar("SELECT count(*) FROM notifications WHERE user_id = $1 AND kind = $2")
                    .bind(user.as_str())
                    .bind(kind)
                    .fetch_one(pool)
                    .await?
            }
            Store::Sqlite(pool) => {
                sqlx::query_scalar("SELECT count(*) FROM notifications WHERE user_id = ?1 AND kind = ?2")
                    .bind(user.as_str())
                    .bind(kind)
                    .fetch_one(pool)
                    .await?
            }
        })
    }
}
