//! The broker: node-level pub/sub (one channel per group), each group's numbered log, and the
//! durable jobs stream, as three small traits (`PubSub`, `GroupLog`, `JobQueue`) that a backend
//! implements together (`Broker`), each with its contract suite.
//!
//! It knows nothing of sockets: the gateway's hub decides which groups this node needs and calls
//! `subscribe`/`unsubscribe`; publications for subscribed groups arrive on the node's inbox
//! (`Inbound`). After a reconnect the inbox yields `Inbound::Reconnected` and the hub subscribes
//! again to everything it holds.
//!
//! Every publication to a group is numbered (`event::Position`, stamped into the payload by
//! `event::stamp`, and handed to receivers with the stamp read back beside the bytes:
//! `Publication`) and kept in the group's window (`config::GroupWindow`), in the same atomic
//! step as it goes out: a node back from a lost connection reads what it missed with
//! `window_since`, and no publication is both missing live and absent from the window. Two
//! implementations pass the same `contract` suites: `memory` (embedded mode, one process) and
//! `redis` (cluster mode).

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::event::{Group, Position, Stamp};
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
    #[error("broker did not answer within {0:?}")]
    Timeout(Duration),
    #[error("not connected to the broker")]
    Disconnected,
    /// The publication was made (numbered `seq` in its group, sent live) but fewer replicas than
    /// `GATEWAY_REDIS_REPLICA_ACKS` took it in time: a failover now could lose it.
    #[error(
        "redis: the publication reached {acked} of the {wanted} replicas it must (GATEWAY_REDIS_REPLICA_ACKS) in time"
    )]
    NotReplicated { wanted: u32, acked: u32, seq: u64 },
    #[error("embedded jobs journal: {0}")]
    Journal(String),
}

/// A publication as the broker hands it over: its stamp beside its bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Publication {
    /// Where it stands in its group's numbering and when it went out; `None` for a payload the
    /// broker did not stamp.
    pub stamp: Option<Stamp>,
    /// The stamped envelope, as it crossed the broker.
    pub payload: Bytes,
}

impl Publication {
    /// A publication received as bytes, its stamp read from their front (`event::read_stamp`).
    pub fn received(payload: Bytes) -> Self {
        Self { stamp: crate::event::read_stamp(&payload), payload }
    }
}

/// What arrives on a node's inbox.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    /// A publication on a group this node subscribed to.
    Message { group: Group, publication: Publication },
    /// The pub/sub connection was (re)established and holds no subscriptions: subscribe again.
    Reconnected,
    /// The pub/sub connection was lost; publications are missed until `Reconnected`.
    Disconnected,
}

/// What a group's window holds after a position.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowRead {
    /// The stamped publications after the position asked for, oldest first. After a new epoch
    /// (the counter was lost and started again), everything the window holds of the new one.
    pub entries: Vec<Publication>,
    /// False when publications after the position are missing from `entries` (trimmed or
    /// expired from the window, or lost with Redis's data): the reader has a gap it cannot fill.
    pub complete: bool,
    /// The group's position when read.
    pub current: Position,
}

impl WindowRead {
    /// Judges completeness from the position asked `after`, the group's `current` position, and
    /// the window's entries (with their seqs) from `after` on (or, for a new epoch, all of them).
    pub fn assemble(after: Position, current: Position, entries: Vec<(u64, Bytes)>) -> Self {
        let first = entries.first().map(|(seq, _)| *seq);
        let complete = if current.epoch == after.epoch {
            // Below `after`: Redis lost its latest writes (a host crash with `appendfsync
            // everysec`), and the seqs after `current` will be used again for new publications.
            current.seq == after.seq || first == Some(after.seq + 1)
        } else {
            // A new counter: complete when the window still starts at its first publication. What
            // the old counter had after `after` cannot be known any more (lost with it).
            let start = Position::counter_start(current.epoch);
            current.seq == start || first == Some(start + 1)
        };
        let entries = entries.into_iter().map(|(_, payload)| Publication::received(payload)).collect();
        Self { entries, complete, current }
    }
}

/// A send that may be made only once: a client's resend with the same `client_message_id`.
#[derive(Debug, Clone, PartialEq)]
pub struct Once {
    /// Who sent it and under which id (`user:client_message_id`).
    pub id: String,
    /// How long the first send is remembered.
    pub ttl: Duration,
}

/// How many publications may wait on a node's inbox before the broker stops reading.
pub const INBOX_CAPACITY: usize = 8192;

/// Publishing and a node's subscriptions: one channel per group. Every publication is numbered
/// and kept in its group's window (`GroupLog`), with its jobs (`JobQueue`), in one atomic step.
#[async_trait]
pub trait PubSub: Send + Sync + 'static {
    /// Live publish to every node subscribed to `group`.
    async fn publish(&self, group: &Group, payload: Bytes) -> Result<(), BrokerError>;

    /// Publishes each `(group, payload)` and appends each job to the jobs stream, atomically
    /// (one script on Redis): all of it happens or none, so that what a client saw live is also
    /// persisted, and a caller told of a failure knows that nothing went out.
    async fn publish_all(&self, publications: &[(Group, Bytes)], jobs: &[Bytes]) -> Result<(), BrokerError>;

    /// One live publish and one job, atomically (`publish_all`).
    async fn publish_and_enqueue(&self, group: &Group, payload: Bytes, job: Bytes) -> Result<(), BrokerError> {
        self.publish_all(&[(group.clone(), payload)], &[job]).await
    }

    /// `publish_and_enqueue`, unless a send under `once` was made within its ttl: then nothing
    /// happens and the first send's payload is returned. Checked and recorded in the same atomic
    /// step as the publish, so two resends racing on two nodes still publish once.
    async fn publish_once(
        &self,
        once: &Once,
        group: &Group,
        payload: Bytes,
        job: Bytes,
    ) -> Result<Option<Bytes>, BrokerError>;

    /// Makes this node receive the groups' publications. Idempotent.
    async fn subscribe(&self, groups: &[Group]) -> Result<(), BrokerError>;

    /// Stops this node receiving the groups' publications. Idempotent.
    async fn unsubscribe(&self, groups: &[Group]) -> Result<(), BrokerError>;

    /// Drops the pub/sub connection and makes a new one (the inbox then yields `Disconnected`
    /// and `Reconnected`): for a connection that stopped delivering without closing.
    async fn reconnect_subscriber(&self) -> Result<(), BrokerError>;

    /// Reachability, for `/readyz`.
    async fn ping(&self) -> Result<(), BrokerError>;
}

/// Each group's numbered log: where its counter stands, and its window of recent publications.
#[async_trait]
pub trait GroupLog: Send + Sync + 'static {
    /// Each group's current position (the last publication's; epoch 0 and seq 0 for a group
    /// with no counter): taken by a node before it subscribes, to know where its live stream starts.
    async fn positions(&self, groups: &[Group]) -> Result<Vec<Position>, BrokerError>;

    /// For each `(group, after)`, what the group's window holds after `after`.
    async fn window_since(&self, reads: &[(Group, Position)]) -> Result<Vec<WindowRead>, BrokerError>;

    /// What `group`'s window holds after `seq` of its current counter, whichever that is (a
    /// reconnecting client's `?since=`, which names no epoch), with the group's current position:
    /// one step on Redis (a reconnect storm's admissions each make one read).
    async fn window_after(&self, group: &Group, seq: u64) -> Result<WindowRead, BrokerError> {
        let current = self.positions(std::slice::from_ref(group)).await?.first().copied().unwrap_or_default();
        let mut reads = self.window_since(&[(group.clone(), Position { epoch: current.epoch, seq })]).await?;
        reads.pop().ok_or(BrokerError::Disconnected)
    }
}

/// The durable jobs stream the worker consumes, its claims, and its dead letters.
#[async_trait]
pub trait JobQueue: Send + Sync + 'static {
    /// Appends `job` to the jobs stream without a live publish.
    async fn enqueue(&self, job: Bytes) -> Result<(), BrokerError>;

    /// Takes up to `max` new jobs for `consumer`, waiting up to `block` for the first one.
    /// Taken jobs stay pending until acked. One broker reads for one consumer (the first one
    /// named), and may read ahead of the calls (on Redis, one blocking reader per bucket's
    /// stream): what it read is pending for that consumer until acked or claimed. Jobs of
    /// different groups come in no particular order; a group's come in order.
    async fn read_jobs(&self, consumer: &str, max: usize, block: Duration) -> Result<Vec<JobEntry>, BrokerError>;

    /// Takes over up to `max` jobs left pending by any consumer for at least `min_idle`.
    async fn claim_stale_jobs(
        &self,
        consumer: &str,
        min_idle: Duration,
        max: usize,
    ) -> Result<Vec<JobEntry>, BrokerError>;

    /// Says `consumer` is alive for `expiry` more (`expiry` zero: it stopped cleanly), and
    /// returns the consumers whose word ran out, each with how long ago (by Redis's clock).
    /// Workers call it every few hundred milliseconds: a consumer that stops calling is dead,
    /// and its pending jobs are for the others to take at once (`claim_jobs_of`).
    async fn worker_beat(&self, consumer: &str, expiry: Duration) -> Result<Vec<(String, Duration)>, BrokerError>;

    /// Takes over up to `max` jobs (per stream) pending for each of `dead`, for `consumer`,
    /// however briefly they were idle. Each of `forget` (a subset of `dead`) left with nothing
    /// pending is removed from the consumer group and the heartbeats: gone for good.
    async fn claim_jobs_of(
        &self,
        consumer: &str,
        dead: &[String],
        forget: &[String],
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
}

/// A whole backend: pub/sub, group logs and the job queue, as one process provides them (the
/// memory bus, one Redis). Callers that need one family take that trait instead.
pub trait Broker: PubSub + GroupLog + JobQueue {}

impl<T: PubSub + GroupLog + JobQueue> Broker for T {}
