//! The pub/sub of a node on a Redis Cluster: sharded (`SSUBSCRIBE`), each group subscribed on
//! the master that holds its slot, through the redis crate's cluster connection (RESP3: one
//! connection per master, publications arriving as push messages). Group channels are published
//! with `SPUBLISH` from the publish script, so a publication crosses only its own shard.
//!
//! A subscription can end without this node asking: Redis moves a slot (a failover, a migration)
//! and unsubscribes the slot's channels (a `sunsubscribe` push), or a master's connection drops
//! (a `Disconnection` push). Publications may have been missed either way, so the task reports
//! `Inbound::Disconnected`, makes a new cluster connection (which reads the slot map afresh) and
//! reports `Inbound::Reconnected`: the hub subscribes again to everything it holds, each group
//! where its slot now lives, and refills every group from its window, exactly as after a
//! reconnect on one Redis. No socket misses a frame, none gets one twice.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::aio::AsyncPushSender;
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind};
use tokio::sync::{mpsc, oneshot};

use super::subscriber::refuse_requests_for;
use super::{timed, SubscriberRequest, MAX_BACKOFF};
use crate::broker::{BrokerError, Inbound, Publication, INBOX_CAPACITY};
use crate::connection::COMMAND_TIMEOUT;
use crate::event::Group;
use crate::keys::{bucket_of, Keys, BUCKETS};

/// A connection that ends sooner than this after it was made counts as failing: the next one
/// waits longer (a slot map still settling after a failover).
const STEADY: Duration = Duration::from_secs(1);

/// Owns the node's sharded subscriptions for the life of the process.
pub(super) async fn sharded_subscriber(
    nodes: Vec<String>,
    keys: Keys,
    mut requests: mpsc::Receiver<SubscriberRequest>,
    inbox: mpsc::Sender<Inbound>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        // The cluster connection hands its push messages to a callback that must not wait: they
        // queue here, bounded. One that finds the queue full is dropped and the session ends as
        // if a subscription were lost (a resubscription refills every group from its window):
        // a node that falls behind costs a refill, never memory without bound nor a silent gap.
        let (push_tx, pushes) = mpsc::channel(INBOX_CAPACITY);
        let overflowed = Arc::new(AtomicBool::new(false));
        let flag = overflowed.clone();
        let on_push = move |push: PushInfo| -> Result<(), ()> {
            if push_tx.try_send(push).is_err() {
                flag.store(true, Ordering::Relaxed);
            }
            Ok(())
        };
        let (conn, made) = match connect(&nodes, on_push).await {
            Ok(conn) => (conn, Instant::now()),
            Err(e) => {
                tracing::warn!(error = %e, "redis cluster pub/sub: connect failed, retrying");
                if !refuse_requests_for(backoff, &mut requests).await {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        tracing::info!("redis cluster pub/sub: connected");
        if inbox.send(Inbound::Reconnected).await.is_err() {
            return; // The node is gone.
        }
        let session = Session { conn, keys: &keys, wanted: HashSet::new(), overflowed };
        let Some(why) = session.run(&mut requests, pushes, &inbox).await else { return };
        tracing::warn!(why, "redis cluster pub/sub: subscriptions lost; resubscribing where the slots are now");
        if inbox.send(Inbound::Disconnected).await.is_err() {
            return;
        }
        if made.elapsed() < STEADY {
            if !refuse_requests_for(backoff, &mut requests).await {
                return;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        } else {
            backoff = Duration::from_millis(50);
        }
    }
}

async fn connect(nodes: &[String], on_push: impl AsyncPushSender) -> Result<ClusterConnection, BrokerError> {
    let client = ClusterClientBuilder::new(nodes.to_vec())
        .use_protocol(redis::ProtocolVersion::RESP3)
        .push_sender(on_push)
        .connection_timeout(COMMAND_TIMEOUT)
        .response_timeout(COMMAND_TIMEOUT)
        .build()?;
    timed(async { Ok(client.get_async_connection().await?) }).await
}

/// One cluster connection's life: requests in, publications out, until a subscription is lost.
struct Session<'a> {
    conn: ClusterConnection,
    keys: &'a Keys,
    /// The channels this node asked for and has not given up: an unsubscribe push for one of
    /// these is Redis moving its slot.
    wanted: HashSet<String>,
    /// Set when a push message found the queue full and was dropped.
    overflowed: Arc<AtomicBool>,
}

impl Session<'_> {
    /// Serves until a subscription is lost (returns why) or the node is gone (`None`).
    async fn run(
        mut self,
        requests: &mut mpsc::Receiver<SubscriberRequest>,
        mut pushes: mpsc::Receiver<PushInfo>,
        inbox: &mpsc::Sender<Inbound>,
    ) -> Option<&'static str> {
        loop {
            tokio::select! {
                request = requests.recv() => {
                    let request = request?;
                    if let Some(why) = self.serve(request).await {
                        return Some(why);
                    }
                }
                push = pushes.recv() => {
                    let Some(push) = push else { return Some("the cluster connection closed") };
                    if self.overflowed.swap(false, Ordering::Relaxed) {
                        return Some("publications came faster than the node took them (some were dropped)");
                    }
                    match push.kind {
                        PushKind::SMessage => {
                            let Some(inbound) = self.publication(push.data) else { continue };
                            inbox.send(inbound).await.ok()?;
                        }
                        PushKind::SUnsubscribe if self.still_wanted(&push.data) => {
                            return Some("a slot moved (the node was unsubscribed)");
                        }
                        PushKind::Disconnection => return Some("a master's connection dropped"),
                        _ => {}
                    }
                }
            }
        }
    }

    /// Carries out one request; `Some` when the connection must be made again.
    async fn serve(&mut self, request: SubscriberRequest) -> Option<&'static str> {
        match request {
            SubscriberRequest::Subscribe(groups, ack) => {
                let channels = self.channels_by_slot(&groups);
                self.wanted.extend(channels.iter().flatten().cloned());
                let result = self.each_slot(channels, true).await;
                answer(ack, result, "a subscribe failed")
            }
            SubscriberRequest::Unsubscribe(groups, ack) => {
                let channels = self.channels_by_slot(&groups);
                for channel in channels.iter().flatten() {
                    self.wanted.remove(channel);
                }
                let result = self.each_slot(channels, false).await;
                answer(ack, result, "an unsubscribe failed")
            }
            SubscriberRequest::Reconnect(ack) => {
                let _ = ack.send(Ok(()));
                Some("asked to reconnect (the canary did not come back)")
            }
        }
    }

    /// The groups' channels, one list per bucket (`SSUBSCRIBE` takes channels of one slot).
    fn channels_by_slot(&self, groups: &[Group]) -> Vec<Vec<String>> {
        let mut by_bucket: Vec<Vec<String>> = vec![Vec::new(); BUCKETS];
        for group in groups {
            by_bucket[bucket_of(group)].push(self.keys.channel(group));
        }
        by_bucket.retain(|channels| !channels.is_empty());
        by_bucket
    }

    async fn each_slot(&mut self, by_slot: Vec<Vec<String>>, subscribe: bool) -> Result<(), BrokerError> {
        for channels in by_slot {
            timed(async {
                if subscribe {
                    self.conn.ssubscribe(&channels).await?;
                } else {
                    self.conn.sunsubscribe(&channels).await?;
                }
                Ok(())
            })
            .await?;
        }
        Ok(())
    }

    fn still_wanted(&self, data: &[redis::Value]) -> bool {
        match data.first() {
            Some(redis::Value::BulkString(channel)) => {
                std::str::from_utf8(channel).is_ok_and(|channel| self.wanted.contains(channel))
            }
            _ => false,
        }
    }

    /// An `smessage` push (`[channel, payload]`) as the inbox takes it.
    fn publication(&self, data: Vec<redis::Value>) -> Option<Inbound> {
        let mut data = data.into_iter();
        let (Some(redis::Value::BulkString(channel)), Some(redis::Value::BulkString(payload))) =
            (data.next(), data.next())
        else {
            return None;
        };
        let group = self.keys.group_of(std::str::from_utf8(&channel).ok()?)?;
        Some(Inbound::Message {
            group: Group::from_name(group),
            publication: Publication::received(Bytes::from(payload)),
        })
    }
}

/// Answers a request; a failure also ends the connection (reconnect, then subscribe again).
fn answer(
    ack: oneshot::Sender<Result<(), BrokerError>>,
    result: Result<(), BrokerError>,
    why: &'static str,
) -> Option<&'static str> {
    let failed = result.is_err();
    let _ = ack.send(result);
    failed.then_some(why)
}
