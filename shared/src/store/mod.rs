//! The store: users, sessions and messages, on PostgreSQL (cluster mode) or SQLite (embedded).
//!
//! The gateway reads (users, membership, history) and writes what the server API upserts; the
//! worker writes messages in batches (`persist`). Migrations run at connect; on PostgreSQL sqlx
//! holds an advisory lock while migrating, so many processes may start at once.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{PgPool, SqlitePool};

use crate::event::{ChatMessage, SessionMessage, UserSnapshot};
use crate::ids::{ChatId, MessageId, SessionId, UserId};
use crate::jobs::Job;

mod channels;
#[cfg(any(test, feature = "contract"))]
pub mod contract;
mod gamification;
mod idempotency;
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
            ErrorKind::UniqueViolation | ErrorKind::ForeignKeyViolation | ErrorKind::NotNullViolation | ErrorKind::CheckViolation
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
        match self {
            Store::Postgres(pool) => postgres::upsert_user(pool, user).await,
            Store::Sqlite(pool) => sqlite::upsert_user(pool, user).await,
        }
    }

    pub async fn user(&self, id: &UserId) -> Result<Option<UserRecord>, StoreError> {
        match self {
            Store::Postgres(pool) => postgres::user(pool, id).await,
            Store::Sqlite(pool) => sqlite::user(pool, id).await,
        }
    }

    pub async fn upsert_session(&self, id: &SessionId, inviter: &UserId, invitee: &UserId) -> Result<(), StoreError> {
        match self {
            Store::Postgres(pool) => postgres::upsert_session(pool, id, inviter, invitee).await,
            Store::Sqlite(pool) => sqlite::upsert_session(pool, id, inviter, invitee).await,
        }
    }

    pub async fn session(&self, id: &SessionId) -> Result<Option<SessionRecord>, StoreError> {
        match self {
            Store::Postgres(pool) => postgres::session(pool, id).await,
            Store::Sqlite(pool) => sqlite::session(pool, id).await,
        }
    }

    pub async fn session_messages(&self, id: &SessionId, page: Page) -> Result<Vec<SessionMessage>, StoreError> {
        match self {
            Store::Postgres(pool) => postgres::session_messages(pool, id, page).await,
            Store::Sqlite(pool) => sqlite::session_messages(pool, id, page).await,
        }
    }

    /// Creates the chat or replaces its members.
    pub async fn upsert_chat(&self, id: &ChatId, members: &[UserId]) -> Result<(), StoreError> {
        match self {
            Store::Postgres(pool) => postgres::upsert_chat(pool, id, members).await,
            Store::Sqlite(pool) => sqlite::upsert_chat(pool, id, members).await,
        }
    }

    pub async fn chat(&self, id: &ChatId) -> Result<Option<ChatRecord>, StoreError> {
        match self {
            Store::Postgres(pool) => postgres::chat(pool, id).await,
            Store::Sqlite(pool) => sqlite::chat(pool, id).await,
        }
    }

    pub async fn is_chat_member(&self, chat: &ChatId, user: &UserId) -> Result<bool, StoreError> {
        match self {
            Store::Postgres(pool) => postgres::is_chat_member(pool, chat, user).await,
            Store::Sqlite(pool) => sqlite::is_chat_member(pool, chat, user).await,
        }
    }

    /// The chat a persisted chat message (not a direct one) belongs to.
    pub async fn chat_of_message(&self, message: &MessageId) -> Result<Option<ChatId>, StoreError> {
        match self {
            Store::Postgres(pool) => postgres::chat_of_message(pool, message).await,
            Store::Sqlite(pool) => sqlite::chat_of_message(pool, message).await,
        }
    }

    /// A chat's messages (direct messages excluded), newest first, senders as they are now.
    pub async fn chat_messages(&self, id: &ChatId, page: Page) -> Result<Vec<ChatMessage>, StoreError> {
        match self {
            Store::Postgres(pool) => postgres::chat_messages(pool, id, page).await,
            Store::Sqlite(pool) => sqlite::chat_messages(pool, id, page).await,
        }
    }

    /// How many users have read `message` (each counted once).
    pub async fn read_count(&self, message: &MessageId) -> Result<i64, StoreError> {
        match self {
            Store::Postgres(pool) => postgres::read_count(pool, message).await,
            Store::Sqlite(pool) => sqlite::read_count(pool, message).await,
        }
    }

    /// Applies a batch of jobs in one transaction: messages, receipts, and the activities they
    /// stand for, scored by `scorer` (stats and award notifications). Idempotent: applying the
    /// same jobs again changes nothing (messages and activities are keyed by id;
    /// `last_message_at` only moves forward).
    pub async fn persist(&self, jobs: &[Job], scorer: &dyn Scorer) -> Result<(), StoreError> {
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

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}
