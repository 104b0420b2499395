//! The broker: node-level pub/sub (one channel per group) plus the durable jobs stream.
//!
//! It knows nothing of sockets: the gateway's hub decides which groups this node needs and calls
//! `subscribe`/`unsubscribe`; publications for subscribed groups arrive on the node's inbox
//! (`Inbound`). After a reconnect the inbox yields `Inbound::Reconnected` and the hub subscribes
//! again to everything it holds. Two implementations pass the same `contract` suite: `memory`
//! (embedded mode, one process) and `redis` (cluster mode).

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::event::Group;
use crate::jobs::{DeadLetter, JobEntry};

#[cfg(any(test, feature = "contract"))]
pub mod contract;
pub mod memory;
pub mod redis;

pub use self::memory::{MemoryBroker, MemoryBus};
pub use self::redis::RedisBroker;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("redis pool: {0}")]
    Pool(#[from] deadpool_redis::PoolError),
    #[error("broker did not answer within {0:?}")]
    Timeout(Duration),
    #[error("not connected to the broker")]
    Disconnected,
    #[error("embedded jobs journal: {0}")]
    Journal(String),
}

/// What arrives on a node's inbox.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    /// A publication on a group this node subscribed to.
    Message { group: Group, payload: Bytes },
    /// The pub/sub connection was (re)established and holds no subscriptions: subscribe again.
    Reconnected,
    /// The pub/sub connection was lost; publications are missed until `Reconnected`.
    Disconnected,
}

/// How many publications may wait on a node's inbox before the broker stops reading.
pub const INBOX_CAPACITY: usize = 8192;

#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Live publish to every node subscribed to `group`.
    async fn publish(&self, group: &Group, payload: Bytes) -> Result<(), BrokerError>;

    /// Publishes each `(group, payload)` and appends each job to the jobs stream, atomically
    /// (one MULTI on Redis): all of it happens or none, so that what a client saw live is also
    /// persisted, and a caller told of a failure knows that nothing went out.
    async fn publish_all(&self, publications: &[(Group, Bytes)], jobs: &[Bytes]) -> Result<(), BrokerError>;

    /// One live publish and one job, atomically (`publish_all`).
    async fn publish_and_enqueue(&self, group: &Group, payload: Bytes, job: Bytes) -> Result<(), BrokerError> {
        self.publish_all(&[(group.clone(), payload)], &[job]).await
    }

    /// Appends `job` to the jobs stream without a live publish.
    async fn enqueue(&self, job: Bytes) -> Result<(), BrokerError> {
        self.publish_all(&[], &[job]).await
    }

    /// Makes this node receive the groups' publications. Idempotent.
    async fn subscribe(&self, groups: &[Group]) -> Result<(), BrokerError>;

    /// Stops this node receiving the groups' publications. Idempotent.
    async fn unsubscribe(&self, groups: &[Group]) -> Result<(), BrokerError>;

    /// Takes up to `max` new jobs for `consumer`, waiting up to `block` for the first one.
    /// Taken jobs stay pending until acked.
    async fn read_jobs(&self, consumer: &str, max: usize, block: Duration) -> Result<Vec<JobEntry>, BrokerError>;

    /// Takes over up to `max` jobs left pending by any consumer for at least `min_idle`.
    async fn claim_stale_jobs(
        &self,
        consumer: &str,
        min_idle: Duration,
        max: usize,
    ) -> Result<Vec<JobEntry>, BrokerError>;

    /// Marks jobs done; they are never delivered again.
    async fn ack_jobs(&self, ids: &[String]) -> Result<(), BrokerError>;

    /// Moves a job that can never be applied to the dead-letter stream, with `error`, and acks
    /// it from the jobs stream, atomically: it is in exactly one of the two streams.
    async fn dead_letter(&self, entry: &JobEntry, error: &str) -> Result<(), BrokerError>;

    /// How many dead letters wait for an operator (for `/metrics`).
    async fn dead_letter_count(&self) -> Result<u64, BrokerError>;

    /// Up to `max` dead letters, oldest first.
    async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, BrokerError>;

    /// Appends the dead letter `id`'s job to the jobs stream again and removes the dead letter,
    /// atomically. False when there is no such dead letter.
    async fn replay_dead_letter(&self, id: &str) -> Result<bool, BrokerError>;

    /// Reachability, for `/readyz`.
    async fn ping(&self) -> Result<(), BrokerError>;

    /// Drops the pub/sub connection and makes a new one (the inbox then yields `Disconnected`
    /// and `Reconnected`): for a connection that stopped delivering without closing.
    async fn reconnect_subscriber(&self) -> Result<(), BrokerError>;
}
