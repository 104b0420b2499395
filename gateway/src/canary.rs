//! Pub/sub liveness. A subscriber connection can stop delivering without closing (a stalled
//! proxy, a half-dead TCP connection): publishes still succeed and nothing says that this node's
//! sockets hear nothing. So every `canary_interval` the node publishes a numbered canary to each
//! of its own canary groups (one per bucket: on a Redis Cluster, one through every master and
//! so every sharded subscriber connection) and waits, up to the same interval, for all of them
//! to come back (the hub records the last one seen per group). One that does not come back makes the node
//! not ready (`/readyz` 503), counts in `gateway_canary_failures_total`, and has the broker drop
//! the connection and make a new one, after which the hub subscribes again to everything it
//! holds. The node is ready again when a canary comes back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use shared::broker::PubSub;
use shared::event::{Envelope, Event, Group};
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;
use crate::metrics::Metrics;

/// How often the hub is asked whether the canary came back, while waiting for it.
const POLL: Duration = Duration::from_millis(10);
/// Longest wait, beyond a few intervals, for the resubscription after a rebuild.
const RESUBSCRIBE_WAIT: Duration = Duration::from_secs(10);

pub(crate) struct Canary {
    pub(crate) broker: Arc<dyn PubSub>,
    pub(crate) hub: Weak<Hub>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) interval: Duration,
    /// False while a canary is overdue (`/readyz`).
    pub(crate) alive: Arc<AtomicBool>,
}

impl Canary {
    pub(crate) async fn run(self, stop: CancellationToken) {
        let mut number: u64 = 0;
        let mut tick = tokio::time::interval(self.interval.max(POLL));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let Some(hub) = self.hub.upgrade() else { return };
            if !hub.in_sync() {
                // Reconnecting already (the connection said it was lost): nothing to prove yet.
                continue;
            }
            number += 1;
            let canary = Envelope::to_all(Event::Raw { event: json!({ "canary": number }) }).encode();
            let canaries: Vec<(Group, Bytes)> =
                hub.canary_groups().iter().map(|g| (g.clone(), canary.clone())).collect();
            if self.broker.publish_all(&canaries, &[]).await.is_err() {
                // Redis is unreachable, which the broker and `/readyz` already say; the canary
                // is about a connection that looks fine and delivers nothing.
                continue;
            }
            let deadline = tokio::time::Instant::now() + self.interval;
            while hub.canary_seen() < number && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(POLL).await;
            }
            if hub.canary_seen() >= number {
                self.alive.store(true, Ordering::Relaxed);
                continue;
            }
            self.alive.store(false, Ordering::Relaxed);
            Metrics::incr(&self.metrics.canary_failures);
            tracing::warn!(number, "pub/sub canary did not come back; reconnecting the subscriber");
            let resyncs = hub.resyncs();
            if let Err(e) = self.broker.reconnect_subscriber().await {
                tracing::warn!(error = %e, "subscriber reconnect request failed");
                continue;
            }
            // The next canary only once the hub has subscribed again on the new connection: one
            // sent earlier would find nobody listening and fail for that reason alone.
            let deadline = tokio::time::Instant::now() + self.interval * 4 + RESUBSCRIBE_WAIT;
            while hub.resyncs() == resyncs && tokio::time::Instant::now() < deadline {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(POLL) => {}
                }
            }
            tick.reset();
        }
    }
}
