//! The broker as the node uses it: every call timed into `gateway_broker_call_duration_seconds`
//! by operation (in cluster mode, the round trips to Redis), so that a slow Redis shows on the
//! dashboard before it shows in the sockets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use shared::broker::{Broker, BrokerError, GroupLog, JobQueue, Once, PubSub, WindowRead};
use shared::event::{Group, Position};
use shared::jobs::{DeadLetter, JobEntry};

use crate::metrics::Metrics;

pub(crate) struct TimedBroker {
    inner: Arc<dyn Broker>,
    metrics: Arc<Metrics>,
}

impl TimedBroker {
    pub(crate) fn wrap(inner: Arc<dyn Broker>, metrics: Arc<Metrics>) -> Arc<dyn Broker> {
        Arc::new(Self { inner, metrics })
    }

    async fn timed<T>(&self, op: &'static str, call: impl std::future::Future<Output = T>) -> T {
        let started = Instant::now();
        let out = call.await;
        self.metrics.broker_call(op, started.elapsed());
        out
    }
}

#[async_trait]
impl PubSub for TimedBroker {
    async fn publish(&self, group: &Group, payload: Bytes) -> Result<(), BrokerError> {
        self.timed("publish", self.inner.publish(group, payload)).await
    }

    async fn publish_all(&self, publications: &[(Group, Bytes)], jobs: &[Bytes]) -> Result<(), BrokerError> {
        self.timed("publish_all", self.inner.publish_all(publications, jobs)).await
    }

    async fn publish_and_enqueue(&self, group: &Group, payload: Bytes, job: Bytes) -> Result<(), BrokerError> {
        self.timed("publish_all", self.inner.publish_and_enqueue(group, payload, job)).await
    }

    async fn publish_once(
        &self,
        once: &Once,
        group: &Group,
        payload: Bytes,
        job: Bytes,
    ) -> Result<Option<Bytes>, BrokerError> {
        self.timed("publish_all", self.inner.publish_once(once, group, payload, job)).await
    }

    async fn subscribe(&self, groups: &[Group]) -> Result<(), BrokerError> {
        self.timed("subscribe", self.inner.subscribe(groups)).await
    }

    async fn unsubscribe(&self, groups: &[Group]) -> Result<(), BrokerError> {
        self.timed("unsubscribe", self.inner.unsubscribe(groups)).await
    }

    async fn ping(&self) -> Result<(), BrokerError> {
        self.timed("ping", self.inner.ping()).await
    }

    async fn reconnect_subscriber(&self) -> Result<(), BrokerError> {
        self.timed("reconnect_subscriber", self.inner.reconnect_subscriber()).await
    }
}

#[async_trait]
impl GroupLog for TimedBroker {
    async fn positions(&self, groups: &[Group]) -> Result<Vec<Position>, BrokerError> {
        self.timed("positions", self.inner.positions(groups)).await
    }

    async fn window_since(&self, reads: &[(Group, Position)]) -> Result<Vec<WindowRead>, BrokerError> {
        self.timed("window_since", self.inner.window_since(reads)).await
    }

    async fn window_after(&self, group: &Group, seq: u64) -> Result<WindowRead, BrokerError> {
        self.timed("window_since", self.inner.window_after(group, seq)).await
    }
}

#[async_trait]
impl JobQueue for TimedBroker {
    async fn enqueue(&self, job: Bytes) -> Result<(), BrokerError> {
        self.timed("publish_all", self.inner.enqueue(job)).await
    }

    async fn read_jobs(&self, consumer: &str, max: usize, block: Duration) -> Result<Vec<JobEntry>, BrokerError> {
        // Blocks by design (an idle stream): not a latency worth a histogram.
        self.inner.read_jobs(consumer, max, block).await
    }

    async fn claim_stale_jobs(
        &self,
        consumer: &str,
        min_idle: Duration,
        max: usize,
    ) -> Result<Vec<JobEntry>, BrokerError> {
        self.timed("claim_stale_jobs", self.inner.claim_stale_jobs(consumer, min_idle, max)).await
    }

    async fn worker_beat(&self, consumer: &str, expiry: Duration) -> Result<Vec<(String, Duration)>, BrokerError> {
        self.timed("worker_beat", self.inner.worker_beat(consumer, expiry)).await
    }

    async fn claim_jobs_of(
        &self,
        consumer: &str,
        dead: &[String],
        forget: &[String],
        max: usize,
    ) -> Result<Vec<JobEntry>, BrokerError> {
        self.timed("claim_jobs_of", self.inner.claim_jobs_of(consumer, dead, forget, max)).await
    }

    async fn ack_jobs(&self, ids: &[String]) -> Result<(), BrokerError> {
        self.timed("ack_jobs", self.inner.ack_jobs(ids)).await
    }

    async fn dead_letter(&self, entry: &JobEntry, error: &str) -> Result<(), BrokerError> {
        self.timed("dead_letter", self.inner.dead_letter(entry, error)).await
    }

    async fn dead_letter_count(&self) -> Result<u64, BrokerError> {
        self.timed("dead_letter_count", self.inner.dead_letter_count()).await
    }

    async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, BrokerError> {
        self.timed("dead_letters", self.inner.dead_letters(max)).await
    }

    async fn replay_dead_letter(&self, id: &str) -> Result<bool, BrokerError> {
        self.timed("replay_dead_letter", self.inner.replay_dead_letter(id)).await
    }
}
