//! The one PostgreSQL twin: applying a batch of jobs (`Store::persist`). Batches use UNNEST: one
//! round trip per batch, never one per row. Everything else is written once in the store modules.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use std::collections::BTreeMap;

use super::gamification::{self, Scorer, UserStats};
use super::onetask::NewNotification;
use super::StoreError;
use crate::ids::UserId;
use crate::jobs::{Activity, Job, StampedJob};

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
    chat_epochs: Vec<Option<i64>>,
    chat_seqs: Vec<Option<i64>>,
    channel_ids: Vec<Uuid>,
    channel_channels: Vec<&'a str>,
    channel_users: Vec<&'a str>,
    channel_contents: Vec<&'a str>,
    channel_times: Vec<DateTime<Utc>>,
    receipt_messages: Vec<Uuid>,
    receipt_users: Vec<&'a str>,
    receipt_chats: Vec<&'a str>,
    receipt_times: Vec<DateTime<Utc>>,
}

impl<'a> Batch<'a> {
    fn of(jobs: &'a [StampedJob]) -> Self {
        let mut b = Batch::default();
        for StampedJob { job, published, .. } in jobs {
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
                    // A direct message goes out on its recipient's group, not the chat's.
                    let position = published.filter(|_| m.recipient_id.is_none());
                    b.chat_epochs.push(position.map(|p| p.epoch as i64));
                    b.chat_seqs.push(position.map(|p| p.seq as i64));
                }
                Job::ChannelMessage(m) => {
                    b.channel_ids.push(m.message_id.as_uuid());
                    b.channel_channels.push(m.channel_id.as_str());
                    b.channel_users.push(m.user_id.as_str());
                    b.channel_contents.push(&m.content);
                    b.channel_times.push(m.created_at);
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

pub(super) async fn persist(pool: &PgPool, jobs: &[StampedJob], scorer: &dyn Scorer) -> Result<(), StoreError> {
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
            "INSERT INTO chat_messages (id, chat_id, sender_id, recipient_id, content, message_type, parent_message_id, created_at,
                                        group_epoch, group_seq)
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::uuid[], $8::timestamptz[],
                                  $9::int8[], $10::int8[])
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
        .bind(&b.chat_epochs)
        .bind(&b.chat_seqs)
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
    if !b.channel_ids.is_empty() {
        insert_channel_messages(&mut tx, &b).await?;
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

/// The batch's Pythia channel messages, each once (the server API may have stored it already).
async fn insert_channel_messages(tx: &mut sqlx::PgConnection, b: &Batch<'_>) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO channel_messages (id, channel_id, user_id, content, created_at)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&b.channel_ids)
    .bind(&b.channel_channels)
    .bind(&b.channel_users)
    .bind(&b.channel_contents)
    .bind(&b.channel_times)
    .execute(tx)
    .await?;
    Ok(())
}

/// Records the batch's activities and scores those not seen before (inside the batch's tx).
async fn score(tx: &mut sqlx::PgConnection, jobs: &[StampedJob], scorer: &dyn Scorer) -> Result<(), StoreError> {
    let activities: Vec<Activity> = jobs.iter().filter_map(|j| j.job.activity()).collect();
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
             longest_streak = v.longest, last_active_day = v.day, unlocked = v.unlocked,
             message_window_start = v.window_start, message_window_points = v.window_points
         FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::int8[], $5::int8[], $6::int8[], $7::int8[], $8::int8[],
                     $9::date[], $10::text[], $11::int8[], $12::int8[])
              AS v(user_id, points, level, messages, tasks, focus, streak, longest, day, unlocked, window_start,
                   window_points)
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
    .bind(column(|s| s.message_window_start))
    .bind(column(|s| s.message_window_points))
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
