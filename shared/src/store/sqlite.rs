//! SQLite queries (embedded mode). One local file: per-row statements inside one transaction
//! cost no network round trips.

use sqlx::{Row, SqlitePool};

use super::{corrupt, Page, SessionRecord, StoreError, UserRecord};
use crate::event::SessionMessage;
use crate::ids::{MessageId, SessionId, UserId};
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
    let row = sqlx::query("SELECT id, username, email, display_name, is_active FROM users WHERE id = ?1")
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
            last_message_at: last.as_deref().map(|t| time::parse(t).ok_or_else(|| corrupt("last_message_at"))).transpose()?,
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
                session_id: SessionId::parse(&r.try_get::<String, _>("session_id")?).map_err(|_| corrupt("session id"))?,
                sender_id: user_id(r.try_get("sender_id")?)?,
                sender_name: r.try_get("sender_name")?,
                content: r.try_get("content")?,
                created_at: time::parse(&created).ok_or_else(|| corrupt("created_at"))?,
            })
        })
        .collect()
}

pub(super) async fn persist(pool: &SqlitePool, jobs: &[Job]) -> Result<(), StoreError> {
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
        }
    }
    tx.commit().await?;
    Ok(())
}
