//! Membership and accounts taking effect on sockets already open, on every node.
//!
//! A socket is authorized once, at its upgrade. When the server API changes who may be in a
//! group, or changes a user's account, it publishes `Event::MembershipChanged` or
//! `Event::AccountChanged` on the control group, which every node subscribes to. The hub hands
//! those to this task, which re-reads the truth from the store (so that the order in which two
//! changes arrive never matters) and acts on this node's sockets:
//!
//! * no longer a participant of a session, chat, workspace or focus session: the user's
//!   sockets in that group close with 4004;
//! * no longer allowed in a private Pythia channel: their sockets leave its room (`channel_left`);
//! * deactivated (or deleted): all of the user's sockets close with 4002.
//!
//! It runs beside the hub, never on the fan-out path: a store lookup waits here, not in delivery.

use std::sync::Weak;
use std::time::Duration;

use shared::event::{Event, Group};
use shared::ids::{ChannelId, ChatId, FocusSessionId, SessionId, UserId, WorkspaceId};
use shared::store::{Store, StoreError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::errors::CloseReason;
use crate::hub::Hub;
use crate::protocols::pythia::may_see;

/// A failed lookup is tried this many times, this far apart, before the change is given up on
/// (logged): the store being away for longer is an outage the operator sees elsewhere.
const ATTEMPTS: u32 = 5;
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// What a user may still do in a group.
enum Standing {
    /// Still allowed: nothing to do.
    Allowed,
    /// Not a member any more: close their sockets there.
    Removed,
    /// May no longer be in the room (private channel): their sockets leave it.
    OutOfRoom,
}

/// Control events waiting for the access task at most; past this the hub notes an overflow and
/// the task re-checks every socket of the node instead (`Hub::take_access_overflow`).
pub(crate) const ACCESS_QUEUE: usize = 1024;

pub(crate) struct AccessTask {
    pub(crate) hub: Weak<Hub>,
    pub(crate) store: Store,
    pub(crate) changes: mpsc::Receiver<Event>,
}

impl AccessTask {
    /// Runs until `stop`.
    pub(crate) async fn run(mut self, stop: CancellationToken) {
        loop {
            let change = tokio::select! {
                _ = stop.cancelled() => return,
                change = self.changes.recv() => change,
            };
            let Some(change) = change else { return };
            let Some(hub) = self.hub.upgrade() else { return };
            match change {
                Event::MembershipChanged { group } => self.recheck_group(&hub, &group).await,
                Event::AccountChanged { user_id } => self.recheck_account(&hub, &user_id).await,
                other => tracing::warn!(?other, "unexpected event on the control group"),
            }
            if hub.take_access_overflow() {
                tracing::warn!("control events were dropped while this task was behind: re-checking every socket");
                for group in hub.held_groups() {
                    self.recheck_group(&hub, &group).await;
                }
                for user in hub.local_users() {
                    self.recheck_account(&hub, &user).await;
                }
            }
        }
    }

    /// Each local user in `group` who may no longer be there is closed (4004) or leaves its room.
    async fn recheck_group(&self, hub: &Hub, group: &Group) {
        for user in hub.users_in(group) {
            match self.with_retries(|| standing(&self.store, group, &user)).await {
                Some(Standing::Allowed) | None => {}
                Some(Standing::Removed) => hub.kick(&user, Some(group), CloseReason::NotMember),
                Some(Standing::OutOfRoom) => hub.evict(&user, group),
            }
        }
    }

    /// A deactivated or deleted user's sockets close (4002).
    async fn recheck_account(&self, hub: &Hub, user: &UserId) {
        let found = self.with_retries(|| self.store.user(user)).await;
        if matches!(found, Some(None)) || matches!(found, Some(Some(ref u)) if !u.is_active) {
            hub.kick(user, None, CloseReason::UserNotFound);
        }
    }

    async fn with_retries<T, F, Fut>(&self, mut lookup: F) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        for attempt in 1..=ATTEMPTS {
            match lookup().await {
                Ok(value) => return Some(value),
                Err(e) if attempt == ATTEMPTS => {
                    tracing::error!(error = %e, "access re-check failed; open sockets keep their access");
                }
                Err(_) => tokio::time::sleep(RETRY_PAUSE).await,
            }
        }
        None
    }
}

/// Whether `user` may still be in `group`, read from the store.
async fn standing(store: &Store, group: &Group, user: &UserId) -> Result<Standing, StoreError> {
    let member = |allowed: bool| if allowed { Standing::Allowed } else { Standing::Removed };
    let Some((kind, id)) = group.kind_and_id() else { return Ok(Standing::Allowed) };
    Ok(match kind {
        "session" => match SessionId::parse(id) {
            Ok(id) => member(store.session(&id).await?.is_some_and(|s| s.has_participant(user))),
            Err(_) => Standing::Allowed,
        },
        "chat" => match ChatId::parse(id) {
            Ok(id) => member(store.is_chat_member(&id, user).await?),
            Err(_) => Standing::Allowed,
        },
        "workspace" => match WorkspaceId::parse(id) {
            Ok(id) => member(store.is_workspace_member(&id, user).await?),
            Err(_) => Standing::Allowed,
        },
        "focus" => match FocusSessionId::parse(id) {
            Ok(id) => member(store.is_focus_participant(&id, user).await?),
            Err(_) => Standing::Allowed,
        },
        "channel" => match ChannelId::parse(id) {
            Ok(id) => match store.channel(&id).await? {
                Some(channel) if may_see(&channel, user) => Standing::Allowed,
                _ => Standing::OutOfRoom,
            },
            Err(_) => Standing::Allowed,
        },
        // `user:{id}` is the user's own feed: not a membership.
        _ => Standing::Allowed,
    })
}
