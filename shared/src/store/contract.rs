//! The contract both stores pass: the same cases, run on SQLite by this crate's unit tests and on
//! a real PostgreSQL by the end-to-end suite. Each case uses ids of its own, so that one store
//! serves them all; a case reads back through the public API only, as the gateway and the worker
//! do.

use std::collections::BTreeSet;

use chrono::Duration as Span;
use serde_json::json;

use super::{NewNotification, Page, Reservation, Scorer, Store, UserRecord, UserStats};
use crate::event::{ChannelMessage, ChatMessage, FocusState, FocusStatus, Position, SessionMessage, UserSnapshot};
use crate::ids::{ChannelId, ChatId, FocusSessionId, MessageId, SessionId, UserId, WorkspaceId};
use crate::jobs::{Activity, ActivityKind, Job, StampedJob};

/// Runs every case on `store`.
pub async fn run_all(store: &Store) {
    users_are_upserted_and_read_back(store).await;
    sessions_keep_their_participants_and_last_message_at(store).await;
    chats_replace_their_members(store).await;
    persist_is_idempotent_and_history_pages_newest_first(store).await;
    channels_report_membership_changes(store).await;
    channel_messages_and_reactions(store).await;
    workspaces_and_focus_sessions(store).await;
    notifications_are_claimed_published_and_marked(store).await;
    activities_count_once_and_awards_wait_for_delivery(store).await;
    idempotency_keys_reserve_answer_and_release(store).await;
}

fn fresh(tag: &str) -> String {
    format!("{tag}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

fn user(id: &str) -> UserId {
    UserId::parse(id).expect("a valid user id")
}

async fn new_user(store: &Store, tag: &str) -> UserRecord {
    let record = UserRecord {
        id: user(&fresh(tag)),
        username: fresh(tag),
        email: Some(format!("{tag}@example.com")),
        display_name: None,
        is_active: true,
        created_at: None,
    };
    store.upsert_user(&record).await.unwrap();
    store.user(&record.id).await.unwrap().expect("stored")
}

fn sorted(mut ids: Vec<UserId>) -> Vec<UserId> {
    ids.sort();
    ids
}

pub async fn users_are_upserted_and_read_back(store: &Store) {
    let ann = new_user(store, "ann").await;
    assert!(ann.created_at.is_some(), "the database sets created_at");
    assert_eq!(ann.shown_name(), ann.username);
    let renamed = UserRecord { display_name: Some("Ann A.".into()), is_active: false, ..ann.clone() };
    store.upsert_user(&renamed).await.unwrap();
    let read = store.user(&ann.id).await.unwrap().unwrap();
    assert_eq!((read.display_name.as_deref(), read.is_active), (Some("Ann A."), false));
    assert_eq!(read.created_at, ann.created_at, "an update keeps the creation time");
    assert_eq!(store.user(&user(&fresh("nobody"))).await.unwrap(), None);
}

pub async fn sessions_keep_their_participants_and_last_message_at(store: &Store) {
    let id = SessionId::from(uuid::Uuid::new_v4());
    let (a, b, c) = (user(&fresh("a")), user(&fresh("b")), user(&fresh("c")));
    store.upsert_session(&id, &a, &b).await.unwrap();
    let session = store.session(&id).await.unwrap().unwrap();
    assert!(session.has_participant(&a) && session.has_participant(&b) && !session.has_participant(&c));
    assert_eq!(session.last_message_at, None);
    store.upsert_session(&id, &a, &c).await.unwrap();
    let session = store.session(&id).await.unwrap().unwrap();
    assert!(session.has_participant(&c) && !session.has_participant(&b), "participants replaced");
    assert_eq!(store.session(&SessionId::from(uuid::Uuid::new_v4())).await.unwrap(), None);
}

pub async fn chats_replace_their_members(store: &Store) {
    let id = ChatId::parse(&fresh("chat")).unwrap();
    let (a, b, c) = (user(&fresh("a")), user(&fresh("b")), user(&fresh("c")));
    store.upsert_chat(&id, &[b.clone(), a.clone(), a.clone()]).await.unwrap();
    let chat = store.chat(&id).await.unwrap().unwrap();
    assert_eq!(sorted(chat.member_ids), sorted(vec![a.clone(), b.clone()]), "each member once");
    assert_eq!(chat.last_message_at, None);
    store.upsert_chat(&id, &[a.clone(), c.clone()]).await.unwrap();
    assert_eq!(sorted(store.chat(&id).await.unwrap().unwrap().member_ids), sorted(vec![a.clone(), c.clone()]));
    assert!(store.is_chat_member(&id, &c).await.unwrap());
    assert!(!store.is_chat_member(&id, &b).await.unwrap());
    store.upsert_chat(&id, &[]).await.unwrap();
    assert!(store.chat(&id).await.unwrap().unwrap().member_ids.is_empty(), "a chat may have no members");
    assert_eq!(store.chat(&ChatId::parse(&fresh("none")).unwrap()).await.unwrap(), None);
}

/// Scores one point per activity and one notification per user's first activity.
struct OnePoint;

impl Scorer for OnePoint {
    fn score(&self, stats: &UserStats, activity: &Activity) -> (UserStats, Vec<NewNotification>) {
        let next = UserStats { points: stats.points + 1, messages: stats.messages + 1, ..stats.clone() };
        let awards =
            (stats.points == 0).then(|| notification(&activity.user_id, "achievement_unlocked")).into_iter().collect();
        (next, awards)
    }
}

fn notification(user_id: &UserId, kind: &str) -> NewNotification {
    NewNotification {
        user_id: user_id.clone(),
        wire_type: kind.into(),
        title: "Title".into(),
        content: "Content".into(),
        notification_type: "achievement".into(),
        related_entity_type: Some("achievement".into()),
        related_entity_id: Some(json!(1)),
        data: Some(json!({"key": "first_message"})),
    }
}

fn snapshot(user: &UserRecord) -> UserSnapshot {
    user.snapshot()
}

pub async fn persist_is_idempotent_and_history_pages_newest_first(store: &Store) {
    let ann = new_user(store, "ann").await;
    let ben = new_user(store, "ben").await;
    let session = SessionId::from(uuid::Uuid::new_v4());
    store.upsert_session(&session, &ann.id, &ben.id).await.unwrap();
    let chat = ChatId::parse(&fresh("chat")).unwrap();
    store.upsert_chat(&chat, &[ann.id.clone(), ben.id.clone()]).await.unwrap();

    let start = crate::time::now() - Span::seconds(60);
    let mut jobs = Vec::new();
    for i in 0..5 {
        jobs.push(Job::SessionMessage(SessionMessage {
            message_id: MessageId::new(),
            session_id: session,
            sender_id: ann.id.clone(),
            sender_name: ann.shown_name().to_owned(),
            content: format!("s{i}"),
            created_at: start + Span::seconds(i),
        }));
    }
    let chat_message = |content: &str, at: i64, parent: Option<MessageId>, to: Option<UserId>| ChatMessage {
        message_id: MessageId::new(),
        chat_id: chat.clone(),
        sender: snapshot(&ann),
        recipient_id: to,
        content: content.into(),
        message_type: "text".into(),
        parent_message_id: parent,
        created_at: start + Span::seconds(at),
    };
    let root = chat_message("root", 10, None, None);
    let reply = chat_message("reply", 11, Some(root.message_id), None);
    let direct = chat_message("psst", 12, None, Some(ben.id.clone()));
    jobs.push(Job::ChatMessage(root.clone()));
    jobs.push(Job::ChatMessage(reply.clone()));
    jobs.push(Job::ChatMessage(direct.clone()));
    let receipt = Job::ReadReceipt {
        message_id: root.message_id,
        chat_id: chat.clone(),
        user_id: ben.id.clone(),
        read_at: crate::time::now(),
    };
    jobs.push(receipt.clone());
    jobs.push(receipt);

    // Where the chat messages went out in their groups (the broker stamps jobs so).
    let epoch = 1_764_547_200_000_000;
    let position = |seq| Some(Position { epoch, seq });
    let stamped: Vec<StampedJob> = jobs
        .iter()
        .cloned()
        .map(|job| {
            let published = match &job {
                Job::ChatMessage(m) if m.message_id == root.message_id => position(1_764_547_200_101),
                Job::ChatMessage(m) if m.message_id == reply.message_id => position(1_764_547_200_102),
                // The recipient's group's position: never the chat's.
                Job::ChatMessage(_) => position(1_764_547_200_103),
                _ => None,
            };
            StampedJob { job, published, traceparent: None }
        })
        .collect();
    store.persist(&stamped, &OnePoint).await.unwrap();
    store.persist(&stamped, &OnePoint).await.unwrap(); // delivered twice: nothing changes

    let page = Page { limit: 50, before: None };
    let history = store.session_messages(&session, page).await.unwrap();
    let contents: Vec<&str> = history.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(contents, ["s4", "s3", "s2", "s1", "s0"], "each once, newest first");
    let Job::SessionMessage(first) = &jobs[0] else { unreachable!() };
    assert_eq!(history[4], *first, "read back as written");
    let older = store.session_messages(&session, Page { limit: 2, before: Some(history[1].message_id) }).await.unwrap();
    assert_eq!(older.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(), ["s2", "s1"]);
    let row = store.session(&session).await.unwrap().unwrap();
    assert_eq!(row.last_message_at, Some(history[0].created_at));

    let chat_history = store.chat_messages(&chat, page).await.unwrap();
    assert_eq!(chat_history, vec![reply.clone(), root.clone()], "direct messages are not in the chat's history");
    assert_eq!(store.chat(&chat).await.unwrap().unwrap().last_message_at, Some(reply.created_at));
    assert_eq!(store.chat_of_message(&root.message_id).await.unwrap(), Some(chat.clone()));
    assert_eq!(store.chat_of_message(&MessageId::new()).await.unwrap(), None);
    assert_eq!(store.read_count(&root.message_id).await.unwrap(), 1, "a receipt counts once");
    // By their positions in the chat's group, oldest first, between two seqs (bounds excluded).
    let between = |after, before| store.chat_messages_between(&chat, epoch, after, before, 10);
    let all = between(1_764_547_200_000, 1_764_547_201_000).await.unwrap();
    assert_eq!(all, vec![(1_764_547_200_101, root.clone()), (1_764_547_200_102, reply.clone())], "no direct message");
    assert_eq!(between(1_764_547_200_101, 1_764_547_200_102).await.unwrap(), vec![]);
    let other_epoch = store.chat_messages_between(&chat, epoch + 1, 0, u64::MAX >> 1, 10).await.unwrap();
    assert!(other_epoch.is_empty(), "another counter's numbers are not these");

    // A batch older than what is stored never moves last_message_at back.
    let late = Job::SessionMessage(SessionMessage {
        message_id: MessageId::new(),
        session_id: session,
        sender_id: ben.id.clone(),
        sender_name: ben.shown_name().to_owned(),
        content: "late".into(),
        created_at: start - Span::seconds(3600),
    });
    store.persist(&[late.into()], &OnePoint).await.unwrap();
    assert_eq!(store.session(&session).await.unwrap().unwrap().last_message_at, Some(history[0].created_at));
}

pub async fn channels_report_membership_changes(store: &Store) {
    let id = ChannelId::parse(&fresh("chan")).unwrap();
    let ann = new_user(store, "ann").await;
    let ben = new_user(store, "ben").await;
    let cat = new_user(store, "cat").await;
    let change = store.upsert_channel(&id, "General", false, &[ann.id.clone(), ben.id.clone()]).await.unwrap();
    assert_eq!((sorted(change.added), change.removed), (sorted(vec![ann.id.clone(), ben.id.clone()]), vec![]));
    let change = store.upsert_channel(&id, "General!", true, &[ann.id.clone(), cat.id.clone()]).await.unwrap();
    assert_eq!((change.added, change.removed), (vec![cat.id.clone()], vec![ben.id.clone()]));
    let channel = store.channel(&id).await.unwrap().unwrap();
    assert_eq!((channel.name.as_str(), channel.private), ("General!", true));
    assert_eq!(sorted(channel.member_ids), sorted(vec![ann.id.clone(), cat.id.clone()]));

    assert!(store.add_channel_member(&id, &ben.id).await.unwrap());
    assert!(!store.add_channel_member(&id, &ben.id).await.unwrap(), "already a member");
    assert!(store.remove_channel_member(&id, &cat.id).await.unwrap());
    assert!(!store.remove_channel_member(&id, &cat.id).await.unwrap(), "not a member any more");
    assert!(store.channels_of(&ben.id).await.unwrap().contains(&id));
    assert!(!store.channels_of(&cat.id).await.unwrap().contains(&id));
    let named = store.members_named(&id, &[ben.username.clone(), cat.username.clone(), "nobody".into()]).await;
    assert_eq!(named.unwrap(), vec![ben.id.clone()], "members only, by username");
    assert_eq!(store.channel(&ChannelId::parse(&fresh("none")).unwrap()).await.unwrap(), None);
}

pub async fn channel_messages_and_reactions(store: &Store) {
    let id = ChannelId::parse(&fresh("chan")).unwrap();
    let ann = new_user(store, "ann").await;
    store.upsert_channel(&id, "Talk", false, std::slice::from_ref(&ann.id)).await.unwrap();
    let message = |content: &str, at: i64| ChannelMessage {
        message_id: MessageId::new(),
        channel_id: id.clone(),
        user_id: ann.id.clone(),
        username: ann.username.clone(),
        email: ann.email.clone(),
        content: content.into(),
        created_at: crate::time::now() - Span::seconds(100 - at),
    };
    let (first, second, third, never) = (message("one", 1), message("two", 2), message("three", 3), message("no", 4));
    store.insert_channel_message(&first).await.unwrap();
    // Stored by the server API and by its job, or by the job alone: once each, whatever the order.
    let jobs: Vec<StampedJob> =
        [&first, &second, &first].into_iter().map(|m| Job::ChannelMessage(m.clone()).into()).collect();
    store.persist(&jobs, &OnePoint).await.unwrap();
    store.insert_channel_message(&second).await.unwrap();
    store.insert_channel_message(&third).await.unwrap();
    let page = Page { limit: 10, before: None };
    let newest = store.channel_messages(&id, page).await.unwrap();
    assert_eq!(newest, vec![third.clone(), second.clone(), first.clone()]);
    let page = Page { limit: 10, before: Some(third.message_id) };
    assert_eq!(store.channel_messages(&id, page).await.unwrap(), vec![second.clone(), first.clone()]);
    let older = store.channel_messages(&id, Page { limit: 10, before: Some(second.message_id) }).await.unwrap();
    assert_eq!(older, vec![first.clone()]);
    assert_eq!(store.channel_of_message(&first.message_id).await.unwrap(), Some(id.clone()));
    assert_eq!(store.channel_of_message(&never.message_id).await.unwrap(), None);

    assert!(store.set_reaction(&first.message_id, &ann.id, "👍", true).await.unwrap());
    assert!(!store.set_reaction(&first.message_id, &ann.id, "👍", true).await.unwrap(), "once per user and emoji");
    assert!(store.set_reaction(&first.message_id, &ann.id, "🎉", true).await.unwrap());
    assert!(store.set_reaction(&first.message_id, &ann.id, "👍", false).await.unwrap());
    assert!(!store.set_reaction(&first.message_id, &ann.id, "👍", false).await.unwrap());
}

pub async fn workspaces_and_focus_sessions(store: &Store) {
    let workspace = WorkspaceId::parse(&fresh("ws")).unwrap();
    let (a, b) = (user(&fresh("a")), user(&fresh("b")));
    store.set_workspace_members(&workspace, &[a.clone(), b.clone()]).await.unwrap();
    store.set_workspace_members(&workspace, std::slice::from_ref(&a)).await.unwrap();
    assert!(store.is_workspace_member(&workspace, &a).await.unwrap());
    assert!(!store.is_workspace_member(&workspace, &b).await.unwrap());

    let focus = FocusSessionId::parse(&fresh("focus")).unwrap();
    store.upsert_focus_session(&focus, &[a.clone(), b.clone()]).await.unwrap();
    assert_eq!(sorted(store.focus_participants(&focus).await.unwrap()), sorted(vec![a.clone(), b.clone()]));
    assert!(store.is_focus_participant(&focus, &b).await.unwrap());
    let idle = store.focus_state(&focus).await.unwrap().unwrap();
    assert_eq!(idle, FocusState::idle());
    let ends = crate::time::now() + Span::seconds(1500);
    let running =
        FocusState { status: FocusStatus::Running, remaining_seconds: 1500, ends_at: Some(ends), ran_seconds: 0 };
    assert!(store.swap_focus_state(&focus, &idle, &running).await.unwrap());
    assert!(!store.swap_focus_state(&focus, &idle, &running).await.unwrap(), "compare-and-set: it moved on");
    let read = store.focus_state(&focus).await.unwrap().unwrap();
    assert_eq!((read.status, read.remaining_seconds), (FocusStatus::Running, 1500));
    assert_eq!(read.ends_at.map(|t| t.timestamp_millis()), Some(ends.timestamp_millis()));
    let paused = FocusState { status: FocusStatus::Paused, remaining_seconds: 1400, ends_at: None, ran_seconds: 100 };
    assert!(store.swap_focus_state(&focus, &read, &paused).await.unwrap(), "the state read back is the one stored");
    // A later PUT keeps the timer.
    store.upsert_focus_session(&focus, std::slice::from_ref(&a)).await.unwrap();
    assert_eq!(store.focus_state(&focus).await.unwrap().unwrap().status, FocusStatus::Paused);
    assert_eq!(store.focus_state(&FocusSessionId::parse(&fresh("none")).unwrap()).await.unwrap(), None);
}

pub async fn notifications_are_claimed_published_and_marked(store: &Store) {
    let ann = user(&fresh("ann"));
    let first = store.insert_notification(notification(&ann, "notification")).await.unwrap();
    let second = store.insert_notification(notification(&ann, "notification")).await.unwrap();
    assert!(second.notification_id > first.notification_id, "integer ids, increasing");
    assert_eq!(first.related_entity_id, Some(json!(1)), "ids keep their JSON type");
    assert_eq!(first.data, Some(json!({"key": "first_message"})));
    // Claimed by the request that stored them: no worker takes them meanwhile.
    let lease = std::time::Duration::from_secs(60);
    let mine = |claimed: Vec<crate::event::Notification>| {
        claimed.into_iter().filter(|n| n.user_id == ann).map(|n| n.notification_id).collect::<Vec<_>>()
    };
    assert!(mine(store.claim_undelivered(100, lease).await.unwrap()).is_empty());
    store.mark_delivered(&[first.notification_id]).await.unwrap();
    store.delete_notification(second.notification_id).await.unwrap();
    assert_eq!(store.notification_count(&ann, "notification").await.unwrap(), 1);
}

pub async fn activities_count_once_and_awards_wait_for_delivery(store: &Store) {
    let ann = user(&fresh("ann"));
    let activity = |id: &str| {
        Job::Activity(Activity {
            id: id.into(),
            user_id: ann.clone(),
            activity: ActivityKind::Message,
            at: crate::time::now(),
            ran_seconds: None,
        })
    };
    let (a1, a2) = (fresh("act"), fresh("act"));
    store.persist(&[activity(&a1).into(), activity(&a1).into(), activity(&a2).into()], &OnePoint).await.unwrap();
    store.persist(&[activity(&a2).into()], &OnePoint).await.unwrap();
    let stats = store.user_stats(&ann).await.unwrap();
    assert_eq!((stats.points, stats.messages), (2, 2), "each activity once");
    assert_eq!(store.user_stats(&user(&fresh("new"))).await.unwrap(), UserStats::default());
    assert_eq!(stats.unlocked, BTreeSet::new());

    // The award waits to be delivered: claimed for a lease, published, marked.
    let lease = std::time::Duration::from_secs(60);
    let mine =
        |claimed: Vec<crate::event::Notification>| claimed.into_iter().filter(|n| n.user_id == ann).collect::<Vec<_>>();
    let claimed = mine(store.claim_undelivered(1000, lease).await.unwrap());
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].wire_type, "achievement_unlocked");
    assert!(mine(store.claim_undelivered(1000, lease).await.unwrap()).is_empty(), "claimed: not handed out twice");
    store.release_undelivered(&[claimed[0].notification_id]).await.unwrap();
    let again = mine(store.claim_undelivered(1000, std::time::Duration::from_millis(10)).await.unwrap());
    assert_eq!(again.iter().map(|n| n.notification_id).collect::<Vec<_>>(), [claimed[0].notification_id]);
    // That worker died: once its short claim has run out, another takes the award over, same id.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let taken_over = loop {
        let claimed = mine(store.claim_undelivered(1000, lease).await.unwrap());
        if !claimed.is_empty() || std::time::Instant::now() > deadline {
            break claimed;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    assert_eq!(taken_over.iter().map(|n| n.notification_id).collect::<Vec<_>>(), [claimed[0].notification_id]);
    store.mark_delivered(&[claimed[0].notification_id]).await.unwrap();
    store.release_undelivered(&[claimed[0].notification_id]).await.unwrap();
    assert!(mine(store.claim_undelivered(1000, lease).await.unwrap()).is_empty(), "delivered: never again");
}

pub async fn idempotency_keys_reserve_answer_and_release(store: &Store) {
    let scope = fresh("backend /api/v1/notifications");
    assert_eq!(store.reserve_idempotency_key(&scope, "k1").await.unwrap(), Reservation::Reserved);
    assert_eq!(store.reserve_idempotency_key(&scope, "k1").await.unwrap(), Reservation::InProgress);
    store.complete_idempotency_key(&scope, "k1", 201, r#"{"notification_id":7}"#).await.unwrap();
    assert_eq!(
        store.reserve_idempotency_key(&scope, "k1").await.unwrap(),
        Reservation::Answered { status: 201, body: r#"{"notification_id":7}"#.into() }
    );
    assert_eq!(store.reserve_idempotency_key(&fresh("other"), "k1").await.unwrap(), Reservation::Reserved, "per scope");
    assert_eq!(store.reserve_idempotency_key(&scope, "k2").await.unwrap(), Reservation::Reserved);
    store.release_idempotency_key(&scope, "k2").await.unwrap();
    assert_eq!(
        store.reserve_idempotency_key(&scope, "k2").await.unwrap(),
        Reservation::Reserved,
        "released: runs again"
    );
}

#[cfg(test)]
mod sqlite_contract {
    #[tokio::test]
    async fn sqlite_store_passes_the_contract() {
        let dir = std::env::temp_dir().join(format!("rtgate-store-{}", uuid::Uuid::new_v4().simple()));
        let url = format!("sqlite://{}", dir.join("contract.db").display());
        let store = super::Store::connect(&url, 4).await.unwrap();
        super::run_all(&store).await;
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }
}
