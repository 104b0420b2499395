//! The one SQLite twin: applying a batch of jobs (`Store::persist`) in embedded mode. One local
//! file: per-row statements inside one transaction cost no network round trips.

use sqlx::SqlitePool;

use std::collections::BTreeMap;

use super::codec::{DbTime, DbUuid};
use super::gamification::{self, Scorer};
use super::StoreError;
use crate::ids::UserId;
use crate::jobs::{Job, StampedJob};
use crate::time;

pub(super) async fn persist(pool: &SqlitePool, jobs: &[StampedJob], scorer: &dyn Scorer) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    for StampedJob { job, published, .. } in jobs {
        match job {
            Job::SessionMessage(m) => {
                let at = time::format(&m.created_at);
                sqlx::query(
                    "INSERT INTO session_messages (id, session_id, sender_id, sender_name, content, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO NOTHING",
                )
                .bind(m.message_id.to_string())
                .bind(m.session_id.to_string())
                .bind(m.sender_id.as_str())
                .bind(&m.sender_name)
                .bind(&m.content)
                .bind(&at)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE sessions SET last_message_at = max(coalesce(last_message_at, ''), ?2) WHERE id = ?1",
                )
                .bind(m.session_id.to_string())
                .bind(&at)
                .execute(&mut *tx)
                .await?;
            }
            Job::ChatMessage(m) => {
                let at = time::format(&m.created_at);
                // A direct message goes out on its recipient's group, not the chat's.
                let position = published.filter(|_| m.recipient_id.is_none());
                sqlx::query(
                    "INSERT INTO chat_messages (id, chat_id, sender_id, recipient_id, content, message_type, parent_message_id, created_at,
                                                group_epoch, group_seq)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT (id) DO NOTHING",
                )
                .bind(m.message_id.to_string())
                .bind(m.chat_id.as_str())
                .bind(m.sender.id.as_str())
                .bind(m.recipient_id.as_ref().map(UserId::as_str))
                .bind(&m.content)
                .bind(&m.message_type)
                .bind(m.parent_message_id.map(|p| p.to_string()))
                .bind(&at)
                .bind(position.map(|p| p.epoch as i64))
                .bind(position.map(|p| p.seq as i64))
                .execute(&mut *tx)
                .await?;
                if m.recipient_id.is_none() {
                    sqlx::query(
                        "UPDATE chats SET last_message_at = max(coalesce(last_message_at, ''), ?2) WHERE id = ?1",
                    )
                    .bind(m.chat_id.as_str())
                    .bind(&at)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            Job::ChannelMessage(m) => {
                sqlx::query(
                    "INSERT INTO channel_messages (id, channel_id, user_id, content, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (id) DO NOTHING",
                )
                .bind(DbUuid(m.message_id.as_uuid()))
                .bind(m.channel_id.as_str())
                .bind(m.user_id.as_str())
                .bind(&m.content)
                .bind(DbTime(m.created_at))
                .execute(&mut *tx)
                .await?;
            }
            Job::ReadReceipt { message_id, chat_id, user_id, read_at } => {
                sqlx::query(
                    "INSERT INTO read_receipts (message_id, user_id, chat_id, read_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT DO NOTHING",
                )
                .bind(message_id.to_string())
                .bind(user_id.as_str())
                .bind(chat_id.as_str())
                .bind(time::format(read_at))
                .execute(&mut *tx)
                .await?;
            }
            Job::Activity(_) => {}
        }
    }
    score(&mut tx, jobs, scorer).await?;
    tx.commit().await?;
    Ok(())
}

/// Records the batch's activities and scores those not seen before (inside the batch's tx).
async fn score(tx: &mut sqlx::SqliteConnection, jobs: &[StampedJob], scorer: &dyn Scorer) -> Result<(), StoreError> {
    let mut fresh = Vec::new();
    for activity in jobs.iter().filter_map(|j| j.job.activity()) {
        let inserted = sqlx::query(
            "INSERT INTO activities (id, user_id, kind, at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
        )
        .bind(&activity.id)
        .bind(activity.user_id.as_str())
        .bind(activity.activity.as_str())
        .bind(time::format(&activity.at))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 1 {
            fresh.push(activity);
        }
    }
    if fresh.is_empty() {
        return Ok(());
    }
    let mut stats = BTreeMap::new();
    for activity in &fresh {
        if stats.contains_key(&activity.user_id) {
            continue;
        }
        let row = sqlx::query("SELECT * FROM user_stats WHERE user_id = ?1")
            .bind(activity.user_id.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let current = row.map(|r| gamification::stats_from_row(&r)).transpose()?.map(|(_, s)| s).unwrap_or_default();
        stats.insert(activity.user_id.clone(), current);
    }
    let earned = gamification::score_all(scorer, &mut stats, &fresh.iter().collect::<Vec<_>>());
    for (user, s) in &stats {
        sqlx::query(
            "INSERT INTO user_stats (user_id, points, level, messages, tasks_completed, focus_completed, current_streak,
                                     longest_streak, last_active_day, unlocked, message_window_start,
                                     message_window_points)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
             ON CONFLICT (user_id) DO UPDATE SET points = excluded.points, level = excluded.level,
                 messages = excluded.messages, tasks_completed = excluded.tasks_completed,
                 focus_completed = excluded.focus_completed, current_streak = excluded.current_streak,
                 longest_streak = excluded.longest_streak, last_active_day = excluded.last_active_day,
                 unlocked = excluded.unlocked, message_window_start = excluded.message_window_start,
                 message_window_points = excluded.message_window_points",
        )
        .bind(user.as_str())
        .bind(s.points)
        .bind(s.level)
        .bind(s.messages)
        .bind(s.tasks_completed)
        .bind(s.focus_completed)
        .bind(s.current_streak)
        .bind(s.longest_streak)
        .bind(s.last_active_day.map(|d| d.format("%Y-%m-%d").to_string()))
        .bind(gamification::unlocked_json(&s.unlocked))
        .bind(s.message_window_start)
        .bind(s.message_window_points)
        .execute(&mut *tx)
        .await?;
    }
    for n in earned {
        sqlx::query(
            "INSERT INTO notifications (user_id, kind, title, content, notification_type, related_entity_type,
                                        related_entity_id, data, created_at, delivered)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0)",
        )
        .bind(n.user_id.as_str())
        .bind(&n.wire_type)
        .bind(&n.title)
        .bind(&n.content)
        .bind(&n.notification_type)
        .bind(&n.related_entity_type)
        .bind(n.related_entity_id.as_ref().map(|v| v.to_string()))
        .bind(n.data.as_ref().map(|v| v.to_string()))
        .bind(time::format(&time::now()))
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}
