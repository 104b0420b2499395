//! SQLite queries (embedded mode). One local file: per-row statements inside one transaction
//! cost no network round trips.

use sqlx::{Row, SqlitePool};

use std::collections::BTreeMap;

use super::gamification::{self, Scorer};
use super::{corrupt, ChatRecord, Page, SessionRecord, StoreError, UserRecord};
use crate::event::{ChatMessage, SessionMessage, UserSnapshot};
use crate::ids::{ChatId, MessageId, SessionId, UserId};
use crate::jobs::Job;
use crate::time;

fn user_id(raw: String) -> Result<UserId, StoreError> {
    UserId::parse(&raw).map_err(|_| corrupt("user id"))
}

pub(super) async fn upsert_user(pool: &SqlitePool, user: &UserRecord) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO users (id, username, email, display_name, is_active) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (id) DO UPDATE SET username = excluded.username, email = excluded.email,
             display_name = excluded.display_name, is_active = excluded.is_active,
             updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
    )
    .bind(user.id.as_str())
    .bind(&user.username)
    .bind(&user.email)
    .bind(&user.display_name)
    .bind(user.is_active)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn user(pool: &SqlitePool, id: &UserId) -> Result<Option<UserRecord>, StoreError> {
    let row = sqlx::query("SELECT id, username, email, display_name, is_active, created_at FROM users WHERE id = ?1")
        .bind(id.as_str())
        .fetch_optional(pool)
        .await?;
    row.map(|r| {
        Ok(UserRecord {
            id: user_id(r.try_get("id")?)?,
            username: r.try_get("username")?,
            email: r.try_get("email")?,
            display_name: r.try_get("display_name")?,
            is_active: r.try_get("is_active")?,
            created_at: time::parse(&r.try_get::<String, _>("created_at")?),
        })
    })
    .transpose()
}

pub(super) async fn upsert_session(
    pool: &SqlitePool,
    id: &SessionId,
    inviter: &UserId,
    invitee: &UserId,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO sessions (id, inviter_id, invitee_id) VALUES (?1, ?2, ?3)
         ON CONFLICT (id) DO UPDATE SET inviter_id = excluded.inviter_id, invitee_id = excluded.invitee_id",
    )
    .bind(id.to_string())
    .bind(inviter.as_str())
    .bind(invitee.as_str())
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn session(pool: &SqlitePool, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
    let row = sqlx::query("SELECT id, inviter_id, invitee_id, last_message_at FROM sessions WHERE id = ?1")
        .bind(id.to_string())
        .fetch_optional(pool)
        .await?;
    row.map(|r| {
        let last: Option<String> = r.try_get("last_message_at")?;
        Ok(SessionRecord {
            id: SessionId::parse(&r.try_get::<String, _>("id")?).map_err(|_| corrupt("session id"))?,
            inviter_id: user_id(r.try_get("inviter_id")?)?,
            invitee_id: user_id(r.try_get("invitee_id")?)?,
            last_message_at: last
                .as_deref()
                .map(|t| time::parse(t).ok_or_else(|| corrupt("last_message_at")))
                .transpose()?,
        })
    })
    .transpose()
}

pub(super) async fn session_messages(
    pool: &SqlitePool,
    id: &SessionId,
    page: Page,
) -> Result<Vec<SessionMessage>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, session_id, sender_id, sender_name, content, created_at FROM session_messages
         WHERE session_id = ?1
           AND (?2 IS NULL OR (created_at, id) < (SELECT created_at, id FROM session_messages WHERE id = ?2))
         ORDER BY created_at DESC, id DESC LIMIT ?3",
    )
    .bind(id.to_string())
    .bind(page.before.map(|b| b.to_string()))
    .bind(page.limit)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            let created: String = r.try_get("created_at")?;
            Ok(SessionMessage {
                message_id: MessageId::parse(&r.try_get::<String, _>("id")?).map_err(|_| corrupt("message id"))?,
                session_id: SessionId::parse(&r.try_get::<String, _>("session_id")?)
                    .map_err(|_| corrupt("session id"))?,
                sender_id: user_id(r.try_get("sender_id")?)?,
                sender_name: r.try_get("sender_name")?,
                content: r.try_get("content")?,
                created_at: time::parse(&created).ok_or_else(|| corrupt("created_at"))?,
            })
        })
        .collect()
}

fn parse_message_id(raw: &str) -> Result<MessageId, StoreError> {
    MessageId::parse(raw).map_err(|_| corrupt("message id"))
}

pub(super) async fn upsert_chat(pool: &SqlitePool, id: &ChatId, members: &[UserId]) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO chats (id) VALUES (?1) ON CONFLICT (id) DO NOTHING")
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM chat_members WHERE chat_id = ?1").bind(id.as_str()).execute(&mut *tx).await?;
    for member in members {
        sqlx::query("INSERT INTO chat_members (chat_id, user_id) VALUES (?1, ?2) ON CONFLICT DO NOTHING")
            .bind(id.as_str())
            .bind(member.as_str())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(super) async fn chat(pool: &SqlitePool, id: &ChatId) -> Result<Option<ChatRecord>, StoreError> {
    let Some(row) =
        sqlx::query("SELECT last_message_at FROM chats WHERE id = ?1").bind(id.as_str()).fetch_optional(pool).await?
    else {
        return Ok(None);
    };
    let members: Vec<String> =
        sqlx::query_scalar("SELECT user_id FROM chat_members WHERE chat_id = ?1 ORDER BY user_id")
            .bind(id.as_str())
            .fetch_all(pool)
            .await?;
    let last: Option<String> = row.try_get("last_message_at")?;
    Ok(Some(ChatRecord {
        id: id.clone(),
        member_ids: members.into_iter().map(user_id).collect::<Result<_, _>>()?,
        last_message_at: last.as_deref().and_then(time::parse),
    }))
}

pub(super) async fn is_chat_member(pool: &SqlitePool, chat: &ChatId, user: &UserId) -> Result<bool, StoreError> {
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM chat_members WHERE chat_id = ?1 AND user_id = ?2")
        .bind(chat.as_str())
        .bind(user.as_str())
        .fetch_optional(pool)
        .await?;
    Ok(found.is_some())
}

pub(super) async fn chat_of_message(pool: &SqlitePool, message: &MessageId) -> Result<Option<ChatId>, StoreError> {
    let chat: Option<String> =
        sqlx::query_scalar("SELECT chat_id FROM chat_messages WHERE id = ?1 AND recipient_id IS NULL")
            .bind(message.to_string())
            .fetch_optional(pool)
            .await?;
    chat.map(|c| ChatId::parse(&c).map_err(|_| corrupt("chat id"))).transpose()
}

pub(super) async fn chat_messages(pool: &SqlitePool, id: &ChatId, page: Page) -> Result<Vec<ChatMessage>, StoreError> {
    let rows = sqlx::query(
        "SELECT m.id, m.sender_id, m.content, m.message_type, m.parent_message_id, m.created_at,
                COALESCE(u.username, m.sender_id) AS username, u.email, COALESCE(u.is_active, 0) AS is_active,
                u.created_at AS user_created_at
         FROM chat_messages m LEFT JOIN users u ON u.id = m.sender_id
         WHERE m.chat_id = ?1 AND m.recipient_id IS NULL
           AND (?2 IS NULL OR (m.created_at, m.id) < (SELECT created_at, id FROM chat_messages WHERE id = ?2))
         ORDER BY m.created_at DESC, m.id DESC LIMIT ?3",
    )
    .bind(id.as_str())
    .bind(page.before.map(|b| b.to_string()))
    .bind(page.limit)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            let created: String = r.try_get("created_at")?;
            let user_created: Option<String> = r.try_get("user_created_at")?;
            let parent: Option<String> = r.try_get("parent_message_id")?;
            Ok(ChatMessage {
                message_id: parse_message_id(&r.try_get::<String, _>("id")?)?,
                chat_id: id.clone(),
                sender: UserSnapshot {
                    id: user_id(r.try_get("sender_id")?)?,
                    username: r.try_get("username")?,
                    email: r.try_get("email")?,
                    is_active: r.try_get("is_active")?,
                    created_at: user_created.as_deref().and_then(time::parse).as_ref().map(time::format),
                },
                recipient_id: None,
                content: r.try_get("content")?,
                message_type: r.try_get("message_type")?,
                parent_message_id: parent.as_deref().map(parse_message_id).transpose()?,
                created_at: time::parse(&created).ok_or_else(|| corrupt("created_at"))?,
            })
        })
        .collect()
}

pub(super) async fn read_count(pool: &SqlitePool, message: &MessageId) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM read_receipts WHERE message_id = ?1")
        .bind(message.to_string())
        .fetch_one(pool)
        .await?)
}

pub(super) async fn persist(pool: &SqlitePool, jobs: &[Job], scorer: &dyn Scorer) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    for job in jobs {
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
                sqlx::query(
                    "INSERT INTO chat_messages (id, chat_id, sender_id, recipient_id, content, message_type, parent_message_id, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (id) DO NOTHING",
                )
                .bind(m.message_id.to_string())
                .bind(m.chat_id.as_str())
                .bind(m.sender.id.as_str())
                .bind(m.recipient_id.as_ref().map(UserId::as_str))
                .bind(&m.content)
                .bind(&m.message_type)
                .bind(m.parent_message_id.map(|p| p.to_string()))
                .bind(&at)
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
async fn score(tx: &mut sqlx::SqliteConnection, jobs: &[Job], scorer: &dyn Scorer) -> Result<(), StoreError> {
    let mut fresh = Vec::new();
    for activity in jobs.iter().filter_map(Job::activity) {
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
                                     longest_streak, last_active_day, unlocked)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT (user_id) DO UPDATE SET points = excluded.points, level = excluded.level,
                 messages = excluded.messages, tasks_completed = excluded.tasks_completed,
                 focus_completed = excluded.focus_completed, current_streak = excluded.current_streak,
                 longest_streak = excluded.longest_streak, last_active_day = excluded.last_active_day,
                 unlocked = excluded.unlocked",
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
