//! PostgreSQL queries. Batches use UNNEST: one round trip per batch, never one per row.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::{corrupt, Page, SessionRecord, StoreError, UserRecord};
use crate::event::SessionMessage;
use crate::ids::{SessionId, UserId};
use crate::jobs::Job;

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
    let row = sqlx::query("SELECT id, username, email, display_name, is_active FROM users WHERE id = $1")
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

pub(super) async fn session_messages(pool: &PgPool, id: &SessionId, page: Page) -> Result<Vec<SessionMessage>, StoreError> {
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

pub(super) async fn persist(pool: &PgPool, jobs: &[Job]) -> Result<(), StoreError> {
    let mut ids = Vec::with_capacity(jobs.len());
    let mut sessions = Vec::with_capacity(jobs.len());
    let mut senders = Vec::with_capacity(jobs.len());
    let mut names = Vec::with_capacity(jobs.len());
    let mut contents = Vec::with_capacity(jobs.len());
    let mut times: Vec<DateTime<Utc>> = Vec::with_capacity(jobs.len());
    for job in jobs {
        match job {
            Job::SessionMessage(m) => {
                ids.push(m.message_id.as_uuid());
                sessions.push(m.session_id.as_uuid());
                senders.push(m.sender_id.as_str());
                names.push(m.sender_name.as_str());
                contents.push(m.content.as_str());
                times.push(m.created_at);
            }
        }
    }
    let mut tx = pool.begin().await?;
    if !ids.is_empty() {
        sqlx::query(
            "INSERT INTO session_messages (id, session_id, sender_id, sender_name, content, created_at)
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::timestamptz[])
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&ids)
        .bind(&sessions)
        .bind(&senders)
        .bind(&names)
        .bind(&contents)
        .bind(&times)
        .execute(&mut *tx)
        .await?;
        // Sessions in id order, so that two workers updating the same sessions lock them in the
        // same order and cannot deadlock.
        sqlx::query(
            "UPDATE sessions AS s SET last_message_at = GREATEST(s.last_message_at, v.at)
             FROM (SELECT sid, max(at) AS at FROM UNNEST($1::uuid[], $2::timestamptz[]) AS t(sid, at)
                   GROUP BY sid ORDER BY sid) AS v
             WHERE s.id = v.sid",
        )
        .bind(&sessions)
        .bind(&times)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
