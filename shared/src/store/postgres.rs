//! PostgreSQL queries. Batches use UNNEST: one round trip per batch, never one per row.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use std::collections::BTreeMap;

use super::gamification::{self, Scorer, UserStats};
use super::onetask::NewNotification;
use super::{corrupt, ChatRecord, Page, SessionRecord, StoreError, UserRecord};
use crate::event::{ChatMessage, SessionMessage, UserSnapshot};
use crate::ids::{ChatId, MessageId, SessionId, UserId};
use crate::jobs::{Activity, Job};

fn user_id(raw: String) -> Result<UserId, StoreError> {
    UserId::parse(&raw).map_err(|_| corrupt("user id"))
}

pub(super) async fn upsert_user(pool: &PgPool, user: &UserRecord) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO users (id, username, email, display_name, is_active) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (id) DO UPDATE SET username = EXCLUDED.username, email = EXCLUDED.email,
             display_name = EXCLUDED.display_name, is_active = EXCLUDED.is_active, updated_at = now()",
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

pub(super) async fn user(pool: &PgPool, id: &UserId) -> Result<Option<UserRecord>, StoreError> {
    let row = sqlx::query("SELECT id, username, email, display_name, is_active, created_at FROM users WHERE id = $1")
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
            created_at: r.try_get("created_at")?,
        })
    })
    .transpose()
}

pub(super) async fn upsert_session(
    pool: &PgPool,
    id: &SessionId,
    inviter: &UserId,
    invitee: &UserId,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO sessions (id, inviter_id, invitee_id) VALUES ($1, $2, $3)
         ON CONFLICT (id) DO UPDATE SET inviter_id = EXCLUDED.inviter_id, invitee_id = EXCLUDED.invitee_id",
    )
    .bind(id.as_uuid())
    .bind(inviter.as_str())
    .bind(invitee.as_str())
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn session(pool: &PgPool, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
    let row = sqlx::query("SELECT id, inviter_id, invitee_id, last_message_at FROM sessions WHERE id = $1")
        .bind(id.as_uuid())
        .fetch_optional(pool)
        .await?;
    row.map(|r| {
        Ok(SessionRecord {
            id: SessionId::from(r.try_get::<Uuid, _>("id")?),
            inviter_id: user_id(r.try_get("inviter_id")?)?,
            invitee_id: user_id(r.try_get("invitee_id")?)?,
            last_message_at: r.try_get("last_message_at")?,
        })
    })
    .transpose()
}

pub(super) async fn session_messages(
    pool: &PgPool,
    id: &SessionId,
    page: Page,
) -> Result<Vec<SessionMessage>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, session_id, sender_id, sender_name, content, created_at FROM session_messages
         WHERE session_id = $1
           AND ($2::uuid IS NULL OR (created_at, id) < (SELECT created_at, id FROM session_messages WHERE id = $2))
         ORDER BY created_at DESC, id DESC LIMIT $3",
    )
    .bind(id.as_uuid())
    .bind(page.before.map(|b| b.as_uuid()))
    .bind(page.limit)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(SessionMessage {
                message_id: r.try_get::<Uuid, _>("id")?.into(),
                session_id: r.try_get::<Uuid, _>("session_id")?.into(),
                sender_id: user_id(r.try_get("sender_id")?)?,
                sender_name: r.try_get("sender_name")?,
                content: r.try_get("content")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .collect()
}

pub(super) async fn upsert_chat(pool: &PgPool, id: &ChatId, members: &[UserId]) -> Result<(), StoreError> {
    let members: Vec<&str> = members.iter().map(UserId::as_str).collect();
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO chats (id) VALUES ($1) ON CONFLICT (id) DO NOTHING")
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM chat_members WHERE chat_id = $1 AND NOT (user_id = ANY($2::text[]))")
        .bind(id.as_str())
        .bind(&members)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO chat_members (chat_id, user_id) SELECT $1, m FROM UNNEST($2::text[]) AS m
         ON CONFLICT DO NOTHING",
    )
    .bind(id.as_str())
    .bind(&members)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn chat(pool: &PgPool, id: &ChatId) -> Result<Option<ChatRecord>, StoreError> {
    let Some(row) =
        sqlx::query("SELECT last_message_at FROM chats WHERE id = $1").bind(id.as_str()).fetch_optional(pool).await?
    else {
        return Ok(None);
    };
    let members: Vec<String> =
        sqlx::query_scalar("SELECT user_id FROM chat_members WHERE chat_id = $1 ORDER BY user_id")
            .bind(id.as_str())
            .fetch_all(pool)
            .await?;
    Ok(Some(ChatRecord {
        id: id.clone(),
        member_ids: members.into_iter().map(user_id).collect::<Result<_, _>>()?,
        last_message_at: row.try_get("last_message_at")?,
    }))
}

pub(super) async fn is_chat_member(pool: &PgPool, chat: &ChatId, user: &UserId) -> Result<bool, StoreError> {
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM chat_members WHERE chat_id = $1 AND user_id = $2")
        .bind(chat.as_str())
        .bind(user.as_str())
        .fetch_optional(pool)
        .await?;
    Ok(found.is_some())
}

pub(super) async fn chat_of_message(pool: &PgPool, message: &MessageId) -> Result<Option<ChatId>, StoreError> {
    let chat: Option<String> =
        sqlx::query_scalar("SELECT chat_id FROM chat_messages WHERE id = $1 AND recipient_id IS NULL")
            .bind(message.as_uuid())
            .fetch_optional(pool)
            .await?;
    chat.map(|c| ChatId::parse(&c).map_err(|_| corrupt("chat id"))).transpose()
}

pub(super) async fn chat_messages(pool: &PgPool, id: &ChatId, page: Page) -> Result<Vec<ChatMessage>, StoreError> {
    let rows = sqlx::query(
        "SELECT m.id, m.sender_id, m.content, m.message_type, m.parent_message_id, m.created_at,
                COALESCE(u.username, m.sender_id) AS username, u.email, COALESCE(u.is_active, FALSE) AS is_active,
                u.created_at AS user_created_at
         FROM chat_messages m LEFT JOIN users u ON u.id = m.sender_id
         WHERE m.chat_id = $1 AND m.recipient_id IS NULL
           AND ($2::uuid IS NULL OR (m.created_at, m.id) < (SELECT created_at, id FROM chat_messages WHERE id = $2))
         ORDER BY m.created_at DESC, m.id DESC LIMIT $3",
    )
    .bind(id.as_str())
    .bind(page.before.map(|b| b.as_uuid()))
    .bind(page.limit)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            let user_created: Option<DateTime<Utc>> = r.try_get("user_created_at")?;
            Ok(ChatMessage {
                message_id: r.try_get::<Uuid, _>("id")?.into(),
                chat_id: id.clone(),
                sender: UserSnapshot {
                    id: user_id(r.try_get("sender_id")?)?,
                    username: r.try_get("username")?,
                    email: r.try_get("email")?,
                    is_active: r.try_get("is_active")?,
                    created_at: user_created.as_ref().map(crate::time::format),
                },
                recipient_id: None,
                content: r.try_get("content")?,
                message_type: r.try_get("message_type")?,
                parent_message_id: r.try_get::<Option<Uuid>, _>("parent_message_id")?.map(Into::into),
                created_at: r.try_get("created_at")?,
            })
        })
        .collect()
}

pub(super) async fn read_count(pool: &PgPool, message: &MessageId) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM read_receipts WHERE message_id = $1")
        .bind(message.as_uuid())
        .fetch_one(pool)
        .await?)
}

/// Column vectors of one batch, for UNNEST.
#[derive(Default)]
struct Batch<'a> {
    session_ids: Vec<Uuid>,
    session_sessions: Vec<Uuid>,
    session_senders: Vec<&'a str>,
    session_names: Vec<&'a str>,
    session_contents: Vec<&'a str>,
    session_times: Vec<DateTime<Utc>>,
    chat_ids: Vec<Uuid>,
    chat_chats: Vec<&'a str>,
    chat_senders: Vec<&'a str>,
    chat_recipients: Vec<Option<&'a str>>,
    chat_contents: Vec<&'a str>,
    chat_types: Vec<&'a str>,
    chat_parents: Vec<Option<Uuid>>,
    chat_times: Vec<DateTime<Utc>>,
    receipt_messages: Vec<Uuid>,
    receipt_users: Vec<&'a str>,
    receipt_chats: Vec<&'a str>,
    receipt_times: Vec<DateTime<Utc>>,
}

impl<'a> Batch<'a> {
    fn of(jobs: &'a [Job]) -> Self {
        let mut b = Batch::default();
        for job in jobs {
            match job {
                Job::SessionMessage(m) => {
                    b.session_ids.push(m.message_id.as_uuid());
                    b.session_sessions.push(m.session_id.as_uuid());
                    b.session_senders.push(m.sender_id.as_str());
                    b.session_names.push(&m.sender_name);
                    b.session_contents.push(&m.content);
                    b.session_times.push(m.created_at);
                }
                Job::ChatMessage(m) => {
                    b.chat_ids.push(m.message_id.as_uuid());
                    b.chat_chats.push(m.chat_id.as_str());
                    b.chat_senders.push(m.sender.id.as_str());
                    b.chat_recipients.push(m.recipient_id.as_ref().map(UserId::as_str));
                    b.chat_contents.push(&m.content);
                    b.chat_types.push(&m.message_type);
                    b.chat_parents.push(m.parent_message_id.map(|p| p.as_uuid()));
                    b.chat_times.push(m.created_at);
                }
                Job::ReadReceipt { message_id, chat_id, user_id, read_at } => {
                    b.receipt_messages.push(message_id.as_uuid());
                    b.receipt_users.push(user_id.as_str());
                    b.receipt_chats.push(chat_id.as_str());
                    b.receipt_times.push(*read_at);
                }
                Job::Activity(_) => {}
            }
        }
        b
    }
}

pub(super) async fn persist(pool: &PgPool, jobs: &[Job], scorer: &dyn Scorer) -> Result<(), StoreError> {
    let b = Batch::of(jobs);
    let mut tx = pool.begin().await?;
    if !b.session_ids.is_empty() {
        sqlx::query(
            "INSERT INTO session_messages (id, session_id, sender_id, sender_name, content, created_at)
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::timestamptz[])
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&b.session_ids)
        .bind(&b.session_sessions)
        .bind(&b.session_senders)
        .bind(&b.session_names)
        .bind(&b.session_contents)
        .bind(&b.session_times)
        .execute(&mut *tx)
        .await?;
        // Locked in id order first, so that two workers updating the same sessions take their
        // row locks in the same order and cannot deadlock (an UPDATE ... FROM promises no order).
        sqlx::query("SELECT 1 FROM sessions WHERE id = ANY($1) ORDER BY id FOR UPDATE")
            .bind(&b.session_sessions)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE sessions AS s SET last_message_at = GREATEST(s.last_message_at, v.at)
             FROM (SELECT sid, max(at) AS at FROM UNNEST($1::uuid[], $2::timestamptz[]) AS t(sid, at)
                   GROUP BY sid) AS v
             WHERE s.id = v.sid",
        )
        .bind(&b.session_sessions)
        .bind(&b.session_times)
        .execute(&mut *tx)
        .await?;
    }
    if !b.chat_ids.is_empty() {
        sqlx::query(
            "INSERT INTO chat_messages (id, chat_id, sender_id, recipient_id, content, message_type, parent_message_id, created_at)
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::uuid[], $8::timestamptz[])
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&b.chat_ids)
        .bind(&b.chat_chats)
        .bind(&b.chat_senders)
        .bind(&b.chat_recipients)
        .bind(&b.chat_contents)
        .bind(&b.chat_types)
        .bind(&b.chat_parents)
        .bind(&b.chat_times)
        .execute(&mut *tx)
        .await?;
        // Direct messages are private: they do not move the chat's activity. Locked in id order
        // first, as the sessions above.
        sqlx::query(
            "SELECT 1 FROM chats WHERE id IN
                 (SELECT cid FROM UNNEST($1::text[], $2::text[]) AS t(cid, rcpt) WHERE rcpt IS NULL)
             ORDER BY id FOR UPDATE",
        )
        .bind(&b.chat_chats)
        .bind(&b.chat_recipients)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE chats AS c SET last_message_at = GREATEST(c.last_message_at, v.at)
             FROM (SELECT cid, max(at) AS at FROM UNNEST($1::text[], $2::timestamptz[], $3::text[]) AS t(cid, at, rcpt)
                   WHERE rcpt IS NULL GROUP BY cid) AS v
             WHERE c.id = v.cid",
        )
        .bind(&b.chat_chats)
        .bind(&b.chat_times)
        .bind(&b.chat_recipients)
        .execute(&mut *tx)
        .await?;
    }
    if !b.receipt_messages.is_empty() {
        sqlx::query(
            "INSERT INTO read_receipts (message_id, user_id, chat_id, read_at)
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::timestamptz[])
             ON CONFLICT DO NOTHING",
        )
        .bind(&b.receipt_messages)
        .bind(&b.receipt_users)
        .bind(&b.receipt_chats)
        .bind(&b.receipt_times)
        .execute(&mut *tx)
        .await?;
    }
    score(&mut tx, jobs, scorer).await?;
    tx.commit().await?;
    Ok(())
}

/// Records the batch's activities and scores those not seen before (inside the batch's tx).
async fn score(tx: &mut sqlx::PgConnection, jobs: &[Job], scorer: &dyn Scorer) -> Result<(), StoreError> {
    let activities: Vec<Activity> = jobs.iter().filter_map(Job::activity).collect();
    if activities.is_empty() {
        return Ok(());
    }
    let recorded: Vec<String> = sqlx::query_scalar(
        "INSERT INTO activities (id, user_id, kind, at)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::timestamptz[])
         ON CONFLICT (id) DO NOTHING RETURNING id",
    )
    .bind(activities.iter().map(|a| a.id.as_str()).collect::<Vec<_>>())
    .bind(activities.iter().map(|a| a.user_id.as_str()).collect::<Vec<_>>())
    .bind(activities.iter().map(|a| a.activity.as_str()).collect::<Vec<_>>())
    .bind(activities.iter().map(|a| a.at).collect::<Vec<_>>())
    .fetch_all(&mut *tx)
    .await?;
    let fresh = gamification::fresh(&activities, &recorded.into_iter().collect());
    if fresh.is_empty() {
        return Ok(());
    }
    let mut people: Vec<&str> = fresh.iter().map(|a| a.user_id.as_str()).collect();
    people.sort_unstable();
    people.dedup();
    sqlx::query("INSERT INTO user_stats (user_id) SELECT * FROM UNNEST($1::text[]) ON CONFLICT DO NOTHING")
        .bind(&people)
        .execute(&mut *tx)
        .await?;
    // Locked in user order, so that concurrent workers cannot deadlock on them.
    let rows = sqlx::query("SELECT * FROM user_stats WHERE user_id = ANY($1) ORDER BY user_id FOR UPDATE")
        .bind(&people)
        .fetch_all(&mut *tx)
        .await?;
    let mut stats: BTreeMap<UserId, UserStats> =
        rows.iter().map(gamification::stats_from_row).collect::<Result<_, _>>()?;
    let earned = gamification::score_all(scorer, &mut stats, &fresh);
    let column = |f: fn(&UserStats) -> i64| stats.values().map(f).collect::<Vec<i64>>();
    sqlx::query(
        "UPDATE user_stats AS s SET points = v.points, level = v.level, messages = v.messages,
             tasks_completed = v.tasks, focus_completed = v.focus, current_streak = v.streak,
             longest_streak = v.longest, last_active_day = v.day, unlocked = v.unlocked
         FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::int8[], $5::int8[], $6::int8[], $7::int8[], $8::int8[],
                     $9::date[], $10::text[])
              AS v(user_id, points, level, messages, tasks, focus, streak, longest, day, unlocked)
         WHERE s.user_id = v.user_id",
    )
    .bind(stats.keys().map(UserId::as_str).collect::<Vec<_>>())
    .bind(column(|s| s.points))
    .bind(column(|s| s.level))
    .bind(column(|s| s.messages))
    .bind(column(|s| s.tasks_completed))
    .bind(column(|s| s.focus_completed))
    .bind(column(|s| s.current_streak))
    .bind(column(|s| s.longest_streak))
    .bind(stats.values().map(|s| s.last_active_day).collect::<Vec<_>>())
    .bind(stats.values().map(|s| gamification::unlocked_json(&s.unlocked)).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    if !earned.is_empty() {
        let text = |f: fn(&NewNotification) -> Option<String>| earned.iter().map(f).collect::<Vec<_>>();
        sqlx::query(
            "INSERT INTO notifications (user_id, kind, title, content, notification_type, related_entity_type,
                                        related_entity_id, data, delivered)
             SELECT u.*, FALSE FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                                           $7::text[], $8::text[]) AS u",
        )
        .bind(text(|n| Some(n.user_id.to_string())))
        .bind(text(|n| Some(n.wire_type.clone())))
        .bind(text(|n| Some(n.title.clone())))
        .bind(text(|n| Some(n.content.clone())))
        .bind(text(|n| Some(n.notification_type.clone())))
        .bind(text(|n| n.related_entity_type.clone()))
        .bind(text(|n| n.related_entity_id.as_ref().map(|v| v.to_string())))
        .bind(text(|n| n.data.as_ref().map(|v| v.to_string())))
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}
