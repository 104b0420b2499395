//! The store: users, sessions and messages, on PostgreSQL (cluster mode) or SQLite (embedded).
//!
//! The gateway reads (users, membership, history) and writes what the server API upserts; the
//! worker writes messages in batches (`persist`). Migrations run at connect; on PostgreSQL sqlx
//! holds an advisory lock while migrating, so many processes may start at once.
//!
//! Each query is written once for both backends (`on_pool!`; ids and instants go through `codec`,
//! which stores them as each backend does). Only applying a batch of jobs has a twin per backend
//! (`postgres`, `sqlite`): PostgreSQL binds whole columns with UNNEST, SQLite loops in one
//! transaction. `contract` is the suite both must pass.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{PgPool, Row, SqlitePool};

use self::codec::{DbTime, DbUuid};

use crate::event::{ChatMessage, SessionMessage, UserSnapshot};
use crate::ids::{ChatId, MessageId, SessionId, UserId};
use crate::jobs::StampedJob;

mod channels;
mod codec;
#[cfg(any(test, feature = "contract"))]
pub mod contract;
mod gamification;
mod idempotency;
mod members;
mod onetask;
mod postgres;
mod sqlite;

pub use channels::{ChannelRecord, MembershipChange};
pub use gamification::{Scorer, UserStats};
pub use idempotency::Reservation;
pub use onetask::NewNotification;

/// Runs the same code on whichever pool the store has, for queries whose SQL and bound types
/// both backends accept as they are (sqlx's SQLite driver takes `$N` placeholders too). The body
/// is compiled once per backend, so a type that one backend cannot bind is a compile error.
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match $store {
            Store::Postgres($pool) => $body,
            Store::Sqlite($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported DATABASE_URL (want postgres:// or sqlite://): {0}")]
    UnsupportedUrl(String),
    #[error("cannot create the folder of {path}: {source}")]
    Folder { path: String, source: std::io::Error },
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// True when the database refused the data itself (a value it cannot store, a constraint),
    /// so that trying the same write again can never succeed; false when it is away or busy.
    pub fn is_refused_data(&self) -> bool {
        use sqlx::error::ErrorKind;
        let StoreError::Db(sqlx::Error::Database(db)) = self else { return false };
        // SQLSTATE class 22 is "data exception" (e.g. 22021, a NUL byte in text).
        let data_exception = db.code().is_some_and(|code| code.starts_with("22"));
        let constraint = matches!(
            db.kind(),
            ErrorKind::UniqueViolation
                | ErrorKind::ForeignKeyViolation
                | ErrorKind::NotNullViolation
                | ErrorKind::CheckViolation
        );
        data_exception || constraint
    }

    /// The database's error code (SQLSTATE on PostgreSQL), for logs and dead letters.
    pub fn code(&self) -> Option<String> {
        match self {
            StoreError::Db(sqlx::Error::Database(db)) => db.code().map(|c| c.into_owned()),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct UserRecord {
    pub id: UserId,
    pub username: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub is_active: bool,
    /// Set by the database; `None` on a record not read from it.
    pub created_at: Option<DateTime<Utc>>,
}

impl UserRecord {
    /// The user as chat.txt's `sender` object shows them.
    pub fn snapshot(&self) -> UserSnapshot {
        UserSnapshot {
            id: self.id.clone(),
            username: self.username.clone(),
            email: self.email.clone(),
            is_active: self.is_active,
            created_at: self.created_at.as_ref().map(crate::time::format),
        }
    }

    /// The name shown to others (PROTOCOL.md "identity"): `display_name`, else `username`.
    pub fn shown_name(&self) -> &str {
        match &self.display_name {
            Some(name) if !name.trim().is_empty() => name,
            _ => &self.username,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    pub id: SessionId,
    pub inviter_id: UserId,
    pub invitee_id: UserId,
    pub last_message_at: Option<DateTime<Utc>>,
}

impl SessionRecord {
    pub fn has_participant(&self, user: &UserId) -> bool {
        &self.inviter_id == user || &self.invitee_id == user
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChatRecord {
    pub id: ChatId,
    pub member_ids: Vec<UserId>,
    pub last_message_at: Option<DateTime<Utc>>,
}

/// A page of history: at most `limit` messages older than `before` (a message id), newest first.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub limit: i64,
    pub before: Option<MessageId>,
}

/// Which of a chat's messages `Store::chat_message_rows` reads.
enum ChatRows {
    /// A page of its history, newest first.
    Page(Page),
    /// Those published under `epoch` between two seqs, oldest first.
    Published { epoch: u64, after: u64, before: u64, limit: i64 },
}

impl Page {
    /// The condition "older than `before`" on `table`, with `before` bound as `param`; empty
    /// (and the parameter unused) without `before`. Written out rather than `$n IS NULL OR …`,
    /// which would need a typed NULL that the two backends spell differently.
    /// `alias` is the query's name for `table` (`m.`), or empty.
    fn older_than(&self, table: &str, alias: &str, param: &str) -> String {
        match self.before {
            Some(_) => {
                format!("AND ({alias}created_at, {alias}id) < (SELECT created_at, id FROM {table} WHERE id = {param})")
            }
            None => String::new(),
        }
    }
}

#[derive(Clone)]
pub enum Store {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

impl Store {
    /// Connects and runs the migrations.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(5))
                .connect(url)
                .await?;
            sqlx::migrate!("./migrations/postgres").run(&pool).await?;
            Ok(Store::Postgres(pool))
        } else if url.starts_with("sqlite:") {
            create_sqlite_folder(url)?;
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(5));
            let pool = SqlitePoolOptions::new().max_connections(max_connections.min(4)).connect_with(options).await?;
            sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
            Ok(Store::Sqlite(pool))
        } else {
            Err(StoreError::UnsupportedUrl(url.split('@').next_back().unwrap_or_default().to_owned()))
        }
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop)?,
            Store::Sqlite(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop)?,
        }
        Ok(())
    }

    pub async fn upsert_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        let now = DbTime(crate::time::now());
        on_pool!(self, |pool| sqlx::query(
            "INSERT INTO users (id, username, email, display_name, is_active) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO UPDATE SET username = excluded.username, email = excluded.email,
                 display_name = excluded.display_name, is_active = excluded.is_active, updated_at = $6",
        )
        .bind(user.id.as_str())
        .bind(&user.username)
        .bind(&user.email)
        .bind(&user.display_name)
        .bind(user.is_active)
        .bind(now)
        .execute(pool)
        .await
        .map(drop))?;
        Ok(())
    }

    pub async fn user(&self, id: &UserId) -> Result<Option<UserRecord>, StoreError> {
        const SQL: &str = "SELECT id, username, email, display_name, is_active, created_at FROM users WHERE id = $1";
        on_pool!(self, |pool| {
            let row = sqlx::query(SQL).bind(id.as_str()).fetch_optional(pool).await?;
            row.map(|r| {
                Ok(UserRecord {
                    id: user_id(r.try_get("id")?)?,
                    username: r.try_get("username")?,
                    email: r.try_get("email")?,
                    display_name: r.try_get("display_name")?,
                    is_active: r.try_get("is_active")?,
                    created_at: Some(r.try_get::<DbTime, _>("created_at")?.0),
                })
            })
            .transpose()
        })
    }

    pub async fn upsert_session(&self, id: &SessionId, inviter: &UserId, invitee: &UserId) -> Result<(), StoreError> {
        on_pool!(self, |pool| sqlx::query(
            "INSERT INTO sessions (id, inviter_id, invitee_id) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET inviter_id = excluded.inviter_id, invitee_id = excluded.invitee_id",
        )
        .bind(DbUuid(id.as_uuid()))
        .bind(inviter.as_str())
        .bind(invitee.as_str())
        .execute(pool)
        .await
        .map(drop))?;
        Ok(())
    }

    pub async fn session(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        const SQL: &str = "SELECT id, inviter_id, invitee_id, last_message_at FROM sessions WHERE id = $1";
        on_pool!(self, |pool| {
            let row = sqlx::query(SQL).bind(DbUuid(id.as_uuid())).fetch_optional(pool).await?;
            row.map(|r| {
                Ok(SessionRecord {
                    id: SessionId::from(r.try_get::<DbUuid, _>("id")?.0),
                    inviter_id: user_id(r.try_get("inviter_id")?)?,
                    invitee_id: user_id(r.try_get("invitee_id")?)?,
                    last_message_at: r.try_get::<Option<DbTime>, _>("last_message_at")?.map(|t| t.0),
                })
            })
            .transpose()
        })
    }

    pub async fn session_messages(&self, id: &SessionId, page: Page) -> Result<Vec<SessionMessage>, StoreError> {
        let sql = format!(
            "SELECT id, session_id, sender_id, sender_name, content, created_at FROM session_messages
             WHERE session_id = $1 {} ORDER BY created_at DESC, id DESC LIMIT $2",
            page.older_than("session_messages", "", "$3")
        );
        let before = page.before.map(|b| DbUuid(b.as_uuid()));
        on_pool!(self, |pool| {
            let mut query = sqlx::query(&sql).bind(DbUuid(id.as_uuid())).bind(page.limit);
            if let Some(before) = before {
                query = query.bind(before);
            }
            let rows = query.fetch_all(pool).await?;
            rows.into_iter()
                .map(|r| {
                    Ok(SessionMessage {
                        message_id: r.try_get::<DbUuid, _>("id")?.0.into(),
                        session_id: r.try_get::<DbUuid, _>("session_id")?.0.into(),
                        sender_id: user_id(r.try_get("sender_id")?)?,
                        sender_name: r.try_get("sender_name")?,
                        content: r.try_get("content")?,
                        created_at: r.try_get::<DbTime, _>("created_at")?.0,
                    })
                })
                .collect()
        })
    }

    /// Creates the chat or replaces its members.
    pub async fn upsert_chat(&self, id: &ChatId, members: &[UserId]) -> Result<(), StoreError> {
        on_pool!(self, |pool| sqlx::query("INSERT INTO chats (id) VALUES ($1) ON CONFLICT (id) DO NOTHING")
            .bind(id.as_str())
            .execute(pool)
            .await
            .map(drop))?;
        self.set_members(members::Members::Chat, id.as_str(), members).await
    }

    pub async fn chat(&self, id: &ChatId) -> Result<Option<ChatRecord>, StoreError> {
        on_pool!(self, |pool| {
            let last: Option<Option<DbTime>> = sqlx::query_scalar("SELECT last_message_at FROM chats WHERE id = $1")
                .bind(id.as_str())
                .fetch_optional(pool)
                .await?;
            let Some(last) = last else { return Ok(None) };
            let members: Vec<String> =
                sqlx::query_scalar("SELECT user_id FROM chat_members WHERE chat_id = $1 ORDER BY user_id")
                    .bind(id.as_str())
                    .fetch_all(pool)
                    .await?;
            Ok(Some(ChatRecord {
                id: id.clone(),
                member_ids: members.into_iter().map(user_id).collect::<Result<_, _>>()?,
                last_message_at: last.map(|t| t.0),
            }))
        })
    }

    pub async fn is_chat_member(&self, chat: &ChatId, user: &UserId) -> Result<bool, StoreError> {
        self.is_member(members::Members::Chat, chat.as_str(), user).await
    }

    /// The chat a persisted chat message (not a direct one) belongs to.
    pub async fn chat_of_message(&self, message: &MessageId) -> Result<Option<ChatId>, StoreError> {
        let chat: Option<String> = on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT chat_id FROM chat_messages WHERE id = $1 AND recipient_id IS NULL"
        )
        .bind(DbUuid(message.as_uuid()))
        .fetch_optional(pool)
        .await)?;
        chat.map(|c| ChatId::parse(&c).map_err(|_| corrupt("chat id"))).transpose()
    }

    /// A chat's messages (direct messages excluded), newest first, senders as they are now.
    pub async fn chat_messages(&self, id: &ChatId, page: Page) -> Result<Vec<ChatMessage>, StoreError> {
        Ok(self.chat_message_rows(id, ChatRows::Page(page)).await?.into_iter().map(|(_, m)| m).collect())
    }

    /// A chat's messages published in its group under `epoch` after seq `after` and before seq
    /// `before`, oldest first, at most `limit`, each with its seq: what a client that resumes past
    /// the group's window missed of them (`jobs::StampedJob`).
    pub async fn chat_messages_between(
        &self,
        id: &ChatId,
        epoch: u64,
        after: u64,
        before: u64,
        limit: i64,
    ) -> Result<Vec<(u64, ChatMessage)>, StoreError> {
        let rows = self.chat_message_rows(id, ChatRows::Published { epoch, after, before, limit }).await?;
        Ok(rows.into_iter().filter_map(|(seq, m)| Some((u64::try_from(seq?).ok()?, m))).collect())
    }

    async fn chat_message_rows(
        &self,
        id: &ChatId,
        rows: ChatRows,
    ) -> Result<Vec<(Option<i64>, ChatMessage)>, StoreError> {
        let (condition, order) = match &rows {
            ChatRows::Page(page) => (
                format!(
                    "{} ORDER BY m.created_at DESC, m.id DESC LIMIT $2",
                    page.older_than("chat_messages", "m.", "$3")
                ),
                "",
            ),
            ChatRows::Published { .. } => (
                "AND m.group_epoch = $2 AND m.group_seq > $3 AND m.group_seq < $4".to_owned(),
                " ORDER BY m.group_seq LIMIT $5",
            ),
        };
        let sql = format!(
            "SELECT m.id, m.sender_id, m.content, m.message_type, m.parent_message_id, m.created_at, m.group_seq,
                    COALESCE(u.username, m.sender_id) AS username, u.email, COALESCE(u.is_active, FALSE) AS is_active,
                    u.created_at AS user_created_at
             FROM chat_messages m LEFT JOIN users u ON u.id = m.sender_id
             WHERE m.chat_id = $1 AND m.recipient_id IS NULL {condition}{order}"
        );
        on_pool!(self, |pool| {
            let mut query = sqlx::query(&sql).bind(id.as_str());
            match &rows {
                ChatRows::Page(page) => {
                    query = query.bind(page.limit);
                    if let Some(before) = page.before {
                        query = query.bind(DbUuid(before.as_uuid()));
                    }
                }
                ChatRows::Published { epoch, after, before, limit } => {
                    query = query.bind(*epoch as i64).bind(*after as i64).bind(*before as i64).bind(*limit);
                }
            }
            let rows = query.fetch_all(pool).await?;
            rows.into_iter()
                .map(|r| {
                    let user_created: Option<DbTime> = r.try_get("user_created_at")?;
                    let message = ChatMessage {
                        message_id: r.try_get::<DbUuid, _>("id")?.0.into(),
                        chat_id: id.clone(),
                        sender: UserSnapshot {
                            id: user_id(r.try_get("sender_id")?)?,
                            username: r.try_get("username")?,
                            email: r.try_get("email")?,
                            is_active: r.try_get("is_active")?,
                            created_at: user_created.as_ref().map(|t| crate::time::format(&t.0)),
                        },
                        recipient_id: None,
                        content: r.try_get("content")?,
                        message_type: r.try_get("message_type")?,
                        parent_message_id: r.try_get::<Option<DbUuid>, _>("parent_message_id")?.map(|p| p.0.into()),
                        created_at: r.try_get::<DbTime, _>("created_at")?.0,
                    };
                    Ok((r.try_get("group_seq")?, message))
                })
                .collect()
        })
    }

    /// How many users have read `message` (each counted once).
    pub async fn read_count(&self, message: &MessageId) -> Result<i64, StoreError> {
        Ok(on_pool!(self, |pool| sqlx::query_scalar("SELECT count(*) FROM read_receipts WHERE message_id = $1")
            .bind(DbUuid(message.as_uuid()))
            .fetch_one(pool)
            .await)?)
    }

    /// Applies a batch of jobs in one transaction: messages, receipts, and the activities they
    /// stand for, scored by `scorer` (stats and award notifications). Idempotent: applying the
    /// same jobs again changes nothing (messages and activities are keyed by id;
    /// `last_message_at` only moves forward).
    pub async fn persist(&self, jobs: &[StampedJob], scorer: &dyn Scorer) -> Result<(), StoreError> {
        if jobs.is_empty() {
            return Ok(());
        }
        match self {
            Store::Postgres(pool) => postgres::persist(pool, jobs, scorer).await,
            Store::Sqlite(pool) => sqlite::persist(pool, jobs, scorer).await,
        }
    }
}

fn create_sqlite_folder(url: &str) -> Result<(), StoreError> {
    let path = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    if let Some(parent) = std::path::Path::new(path).parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| StoreError::Folder { path: path.to_owned(), source })?;
    }
    Ok(())
}

fn user_id(raw: String) -> Result<UserId, StoreError> {
    UserId::parse(&raw).map_err(|_| corrupt("user id"))
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}
