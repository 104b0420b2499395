//! Pythia channels: membership, messages (written synchronously by the messages API, which
//! persists before it broadcasts) and reactions. Each query is written once for both backends.

use sqlx::Row;

use super::codec::{DbTime, DbUuid};
use super::members::Members;
use super::{corrupt, on_pool, Page, Store, StoreError};
use crate::event::ChannelMessage;
use crate::ids::{ChannelId, MessageId, UserId};

#[derive(Debug, Clone, PartialEq)]
pub struct ChannelRecord {
    pub id: ChannelId,
    pub name: String,
    pub private: bool,
    pub member_ids: Vec<UserId>,
}

/// Who joined and who left with a membership change.
#[derive(Debug, Default, PartialEq)]
pub struct MembershipChange {
    pub added: Vec<UserId>,
    pub removed: Vec<UserId>,
}

fn user_id(raw: String) -> Result<UserId, StoreError> {
    UserId::parse(&raw).map_err(|_| corrupt("user id"))
}

fn channel_id(raw: String) -> Result<ChannelId, StoreError> {
    ChannelId::parse(&raw).map_err(|_| corrupt("channel id"))
}

impl Store {
    /// Creates or updates a channel and replaces its members.
    pub async fn upsert_channel(
        &self,
        id: &ChannelId,
        name: &str,
        private: bool,
        members: &[UserId],
    ) -> Result<MembershipChange, StoreError> {
        let before = self.channel(id).await?.map(|c| c.member_ids).unwrap_or_default();
        on_pool!(self, |pool| sqlx::query(
            "INSERT INTO channels (id, name, private) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, private = excluded.private"
        )
        .bind(id.as_str())
        .bind(name)
        .bind(private)
        .execute(pool)
        .await
        .map(drop))?;
        self.set_members(Members::Channel, id.as_str(), members).await?;
        Ok(MembershipChange {
            added: members.iter().filter(|m| !before.contains(m)).cloned().collect(),
            removed: before.into_iter().filter(|m| !members.contains(m)).collect(),
        })
    }

    pub async fn channel(&self, id: &ChannelId) -> Result<Option<ChannelRecord>, StoreError> {
        let (row, members): (Option<(String, bool)>, Vec<String>) = on_pool!(self, |pool| (
            sqlx::query_as("SELECT name, private FROM channels WHERE id = $1")
                .bind(id.as_str())
                .fetch_optional(pool)
                .await?,
            sqlx::query_scalar("SELECT user_id FROM channel_members WHERE channel_id = $1 ORDER BY user_id")
                .bind(id.as_str())
                .fetch_all(pool)
                .await?,
        ));
        let Some((name, private)) = row else { return Ok(None) };
        Ok(Some(ChannelRecord {
            id: id.clone(),
            name,
            private,
            member_ids: members.into_iter().map(user_id).collect::<Result<_, _>>()?,
        }))
    }

    /// Adds one member; true if they were not a member before.
    pub async fn add_channel_member(&self, channel: &ChannelId, user: &UserId) -> Result<bool, StoreError> {
        let done = on_pool!(self, |pool| sqlx::query(
            "INSERT INTO channel_members (channel_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING"
        )
        .bind(channel.as_str())
        .bind(user.as_str())
        .execute(pool)
        .await?
        .rows_affected());
        Ok(done == 1)
    }

    /// Removes one member; true if they were a member.
    pub async fn remove_channel_member(&self, channel: &ChannelId, user: &UserId) -> Result<bool, StoreError> {
        let done =
            on_pool!(self, |pool| sqlx::query("DELETE FROM channel_members WHERE channel_id = $1 AND user_id = $2")
                .bind(channel.as_str())
                .bind(user.as_str())
                .execute(pool)
                .await?
                .rows_affected());
        Ok(done == 1)
    }

    /// The channels `user` is a member of.
    pub async fn channels_of(&self, user: &UserId) -> Result<Vec<ChannelId>, StoreError> {
        let ids: Vec<String> =
            on_pool!(self, |pool| sqlx::query_scalar("SELECT channel_id FROM channel_members WHERE user_id = $1")
                .bind(user.as_str())
                .fetch_all(pool)
                .await?);
        ids.into_iter().map(channel_id).collect()
    }

    /// Members among `usernames` of `channel` (for `@username` mentions).
    pub async fn members_named(&self, channel: &ChannelId, usernames: &[String]) -> Result<Vec<UserId>, StoreError> {
        let mut found = Vec::new();
        for username in usernames {
            let ids: Vec<String> = on_pool!(self, |pool| sqlx::query_scalar(
                "SELECT u.id FROM users u JOIN channel_members m ON m.user_id = u.id
                 WHERE m.channel_id = $1 AND u.username = $2 AND u.is_active"
            )
            .bind(channel.as_str())
            .bind(username)
            .fetch_all(pool)
            .await?);
            found.extend(ids.into_iter().map(user_id).collect::<Result<Vec<_>, _>>()?);
        }
        found.sort();
        found.dedup();
        Ok(found)
    }

    pub async fn insert_channel_message(&self, m: &ChannelMessage) -> Result<(), StoreError> {
        on_pool!(self, |pool| sqlx::query(
            "INSERT INTO channel_messages (id, channel_id, user_id, content, created_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO NOTHING"
        )
        .bind(DbUuid(m.message_id.as_uuid()))
        .bind(m.channel_id.as_str())
        .bind(m.user_id.as_str())
        .bind(&m.content)
        .bind(DbTime(m.created_at))
        .execute(pool)
        .await
        .map(drop))?;
        Ok(())
    }

    /// The channel of a channel message.
    pub async fn channel_of_message(&self, message: &MessageId) -> Result<Option<ChannelId>, StoreError> {
        let id: Option<String> =
            on_pool!(self, |pool| sqlx::query_scalar("SELECT channel_id FROM channel_messages WHERE id = $1")
                .bind(DbUuid(message.as_uuid()))
                .fetch_optional(pool)
                .await?);
        id.map(channel_id).transpose()
    }

    /// Adds (`add`) or removes a reaction; true if that changed anything.
    pub async fn set_reaction(
        &self,
        message: &MessageId,
        user: &UserId,
        emoji: &str,
        add: bool,
    ) -> Result<bool, StoreError> {
        let sql = if add {
            "INSERT INTO message_reactions (message_id, user_id, emoji) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
        } else {
            "DELETE FROM message_reactions WHERE message_id = $1 AND user_id = $2 AND emoji = $3"
        };
        let affected = on_pool!(self, |pool| sqlx::query(sql)
            .bind(DbUuid(message.as_uuid()))
            .bind(user.as_str())
            .bind(emoji)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(affected == 1)
    }

    /// A channel's messages, newest first, with their authors as they are now.
    pub async fn channel_messages(&self, channel: &ChannelId, page: Page) -> Result<Vec<ChannelMessage>, StoreError> {
        let sql = format!(
            "SELECT m.id, m.user_id, m.content, m.created_at, COALESCE(u.username, m.user_id) AS username, u.email
             FROM channel_messages m LEFT JOIN users u ON u.id = m.user_id
             WHERE m.channel_id = $1 {} ORDER BY m.created_at DESC, m.id DESC LIMIT $2",
            page.older_than("channel_messages", "m.", "$3")
        );
        let before = page.before.map(|b| DbUuid(b.as_uuid()));
        on_pool!(self, |pool| {
            let mut query = sqlx::query(&sql).bind(channel.as_str()).bind(page.limit);
            if let Some(before) = before {
                query = query.bind(before);
            }
            query
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(|r| {
                    Ok(ChannelMessage {
                        message_id: r.try_get::<DbUuid, _>("id")?.0.into(),
                        channel_id: channel.clone(),
                        user_id: user_id(r.try_get("user_id")?)?,
                        username: r.try_get("username")?,
                        email: r.try_get("email")?,
                        content: r.try_get("content")?,
                        created_at: r.try_get::<DbTime, _>("created_at")?.0,
                    })
                })
                .collect()
        })
    }
}
