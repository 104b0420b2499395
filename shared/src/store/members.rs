//! Membership tables (a group id and a user id per row): one way to replace and to test
//! membership, for chats, Pythia channels, OneTask workspaces and focus sessions.

use super::{on_pool, Store, StoreError};
use crate::ids::UserId;

/// A membership table, as (table, group id column).
#[derive(Clone, Copy)]
pub(super) enum Members {
    Chat,
    Channel,
    Workspace,
    Focus,
}

impl Members {
    fn table(self) -> (&'static str, &'static str) {
        match self {
            Members::Chat => ("chat_members", "chat_id"),
            Members::Channel => ("channel_members", "channel_id"),
            Members::Workspace => ("workspace_members", "workspace_id"),
            Members::Focus => ("focus_participants", "session_id"),
        }
    }
}

impl Store {
    /// Replaces the members of `id`, in one transaction.
    pub(super) async fn set_members(&self, kind: Members, id: &str, members: &[UserId]) -> Result<(), StoreError> {
        let (table, column) = kind.table();
        let clear = format!("DELETE FROM {table} WHERE {column} = $1");
        let add = format!("INSERT INTO {table} ({column}, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING");
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            sqlx::query(&clear).bind(id).execute(&mut *tx).await?;
            for member in members {
                sqlx::query(&add).bind(id).bind(member.as_str()).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok::<_, StoreError>(())
        })
    }

    pub(super) async fn is_member(&self, kind: Members, id: &str, user: &UserId) -> Result<bool, StoreError> {
        let (table, column) = kind.table();
        let sql = format!("SELECT 1 FROM {table} WHERE {column} = $1 AND user_id = $2");
        let found: Option<i32> =
            on_pool!(self, |pool| sqlx::query_scalar(&sql).bind(id).bind(user.as_str()).fetch_optional(pool).await?);
        Ok(found.is_some())
    }
}
