//! The Redis broker of cluster mode, on one Redis (`REDIS_URL`) or a Redis Cluster
//! (`REDIS_CLUSTER_NODES`); [`crate::connection`] says which and routes the commands.
//!
//! - Publishing ([`PubSub`]): one script per slot (`scripts::PUBLISH_SCRIPT`) numbers, windows and
//!   publishes each publication and appends its jobs. Every key of a group lives in its bucket's
//!   slot (see `keys`), so on a cluster a publication with its job is one atomic step; a call
//!   with groups of several buckets is one step per bucket (see [`PubSub::publish_all`]). With
//!   `replica_acks` the call returns only once that many replicas have the step (`WAIT`).
//! - Receiving: on one Redis one classic `SUBSCRIBE` connection (`subscriber`); on a cluster
//!   sharded pub/sub, `SSUBSCRIBE` where each group's slot lives (`sharded`).
//! - Window reads ([`GroupLog`]) are grouped by slot and run side by side.
//! - The jobs ([`JobQueue`], `jobs`) are one stream per bucket, read by one blocking reader each.
//!
//! Deadlines: every command has a response timeout of `COMMAND_TIMEOUT`, and the broker also
//! bounds each of its calls, pool wait included, by it. Blocking stream reads use connections of
//! their own with no client response timeout (it would fail a read that is merely waiting),
//! bounded by the broker at their BLOCK plus `COMMAND_TIMEOUT`.

mod jobs;
mod scripts;
mod sharded;
mod subscriber;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::future::try_join_all;
use tokio::sync::{mpsc, oneshot};

use self::scripts::{PUBLISH_SCRIPT, WINDOW_SCRIPT};
use super::{BrokerError, GroupLog, Inbound, Once, PubSub, WindowRead, INBOX_CAPACITY};
use crate::config::GroupWindow;
use crate::connection::{Commands, RedisTarget, COMMAND_TIMEOUT};
use crate::event::{Group, Position};
use crate::keys::{bucket_of, Keys};

const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// A group's counter lives this long after its last publication (a new epoch after that).
const COUNTER_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest a publication waits for its replicas (`GATEWAY_REDIS_REPLICA_ACKS`) before the
/// caller hears that it is not safe.
const REPLICA_WAIT: Duration = Duration::from_secs(1);

pub struct RedisBroker {
    commands: Commands,
    keys: Keys,
    window: GroupWindow,
    /// Replicas that must have each publication before it counts as made (`WAIT`); 0: none.
    replica_acks: u32,
    /// The jobs streams' readers, started by the first `read_jobs`.
    readers: tokio::sync::Mutex<Option<jobs::Readers>>,
    /// Requests to the subscriber task; `None` for a broker that only publishes (the worker).
    subscriber: Option<mpsc::Sender<SubscriberRequest>>,
}

enum SubscriberRequest {
    Subscribe(Vec<Group>, oneshot::Sender<Result<(), BrokerError>>),
    Unsubscribe(Vec<Group>, oneshot::Sender<Result<(), BrokerError>>),
    /// Drop the connection and make a new one (it stopped delivering without closing).
    Reconnect(oneshot::Sender<Result<(), BrokerError>>),
}

impl RedisBroker {
    /// A broker for commands and the jobs streams only (no pub/sub inbox). Connects lazily.
    pub fn new(target: &RedisTarget, prefix: &str) -> Result<Self, BrokerError> {
        Ok(Self {
            commands: Commands::new(target)?,
            keys: Keys::new(prefix),
            window: GroupWindow::default(),
            replica_acks: 0,
            readers: tokio::sync::Mutex::new(None),
            subscriber: None,
        })
    }

    /// Keeps each group's window as `window` says (the default otherwise).
    pub fn with_window(mut self, window: GroupWindow) -> Self {
        self.window = window;
        self
    }

    /// Each publication returns only once `acks` replicas have it (`GATEWAY_REDIS_REPLICA_ACKS`).
    pub fn with_replica_acks(mut self, acks: u32) -> Self {
        self.replica_acks = acks;
        self
    }

    /// A gateway node's broker: commands plus the pub/sub connection(s) feeding the returned inbox.
    pub fn with_subscriber(
        target: &RedisTarget,
        prefix: &str,
        window: GroupWindow,
    ) -> Result<(Self, mpsc::Receiver<Inbound>), BrokerError> {
        let mut broker = Self::new(target, prefix)?.with_window(window);
        let (req_tx, req_rx) = mpsc::channel(256);
        let (inbox_tx, inbox_rx) = mpsc::channel(INBOX_CAPACITY);
        let keys = broker.keys.clone();
        match target {
            RedisTarget::Single(url) => {
                let client = redis::Client::open(url.as_str())?;
                tokio::spawn(subscriber::subscriber_task(client, keys, req_rx, inbox_tx));
            }
            RedisTarget::Cluster(nodes) => {
                tokio::spawn(sharded::sharded_subscriber(nodes.clone(), keys, req_rx, inbox_tx));
            }
        }
        broker.subscriber = Some(req_tx);
        Ok((broker, inbox_rx))
    }

    /// The command connections, shared with the presence store.
    pub fn commands(&self) -> Commands {
        self.commands.clone()
    }

    /// Runs the publish script for `publications` and `jobs`: one step per slot (see
    /// `PubSub::publish_all`), the jobs with the first. Returns what `once` found already sent.
    async fn run_publish(
        &self,
        publications: &[(Group, Bytes)],
        jobs: &[Bytes],
        once: Option<&Once>,
    ) -> Result<Option<Bytes>, BrokerError> {
        let batches = self.commands.by_slot(publications, |(group, _)| bucket_of(group));
        if batches.is_empty() {
            return self.publish_step(jobs::LONE_JOBS_BUCKET, &[], jobs, None).await;
        }
        let mut first_answer = None;
        for (step, batch) in batches.iter().enumerate() {
            let publications: Vec<&(Group, Bytes)> = batch.iter().map(|&i| &publications[i]).collect();
            let bucket = bucket_of(&publications[0].0);
            let jobs = if step == 0 { jobs } else { &[] };
            let answer = self.publish_step(bucket, &publications, jobs, once).await?;
            if step == 0 {
                first_answer = answer;
            }
        }
        Ok(first_answer)
    }

    /// One run of the publish script, all in `bucket`'s slot.
    async fn publish_step(
        &self,
        bucket: usize,
        publications: &[&(Group, Bytes)],
        jobs: &[Bytes],
        once: Option<&Once>,
    ) -> Result<Option<Bytes>, BrokerError> {
        timed(async {
            let mut conn = self.commands.conn().await?;
            let mut invocation = PUBLISH_SCRIPT.prepare_invoke();
            let stream = self.keys.jobs_stream(bucket);
            invocation.key(&stream);
            invocation
                .arg(self.window.len)
                .arg(self.window.ttl.as_secs())
                .arg(COUNTER_TTL.as_secs())
                .arg(publications.len())
                .arg(once.map(|o| o.ttl.as_secs().max(1)).unwrap_or(0))
                .arg(if self.commands.is_cluster() { "SPUBLISH" } else { "PUBLISH" })
                .arg(now_ms());
            for (group, payload) in publications {
                invocation.key(self.keys.counter(group)).key(self.keys.window(group));
                invocation.arg(self.keys.channel(group)).arg(payload.as_ref());
            }
            if let (Some(once), Some((group, _))) = (once, publications.first()) {
                invocation.key(self.keys.sent(group, &once.id));
            }
            for job in jobs {
                invocation.arg(job.as_ref());
            }
            let answer = invocation.invoke_async::<redis::Value>(&mut conn).await?;
            if self.replica_acks > 0 {
                let acked = conn.wait_for_replicas(&stream, self.replica_acks, REPLICA_WAIT).await?;
                if acked < self.replica_acks {
                    let seq = match answer {
                        redis::Value::Int(seq) => u64::try_from(seq).unwrap_or(0),
                        _ => 0,
                    };
                    return Err(BrokerError::NotReplicated { wanted: self.replica_acks, acked, seq });
                }
            }
            match answer {
                redis::Value::BulkString(first) => Ok(Some(Bytes::from(first))),
                _ => Ok(None),
            }
        })
        .await
    }

    /// Runs `read` for each slot's share of `items` side by side (one call on a single Redis)
    /// and puts the answers back in the order of `items`.
    async fn per_slot<T: Clone, R, Fut>(
        &self,
        items: &[T],
        bucket: impl Fn(&T) -> usize,
        read: impl Fn(Vec<T>) -> Fut,
    ) -> Result<Vec<R>, BrokerError>
    where
        Fut: std::future::Future<Output = Result<Vec<R>, BrokerError>>,
    {
        let batches = self.commands.by_slot(items, bucket);
        let answers =
            try_join_all(batches.iter().map(|batch| read(batch.iter().map(|&i| items[i].clone()).collect()))).await?;
        let mut placed: Vec<Option<R>> = items.iter().map(|_| None).collect();
        for (batch, answer) in batches.iter().zip(answers) {
            for (&i, value) in batch.iter().zip(answer) {
                placed[i] = Some(value);
            }
        }
        placed.into_iter().map(|v| v.ok_or(BrokerError::Disconnected)).collect()
    }

    async fn request(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), BrokerError>>) -> SubscriberRequest,
    ) -> Result<(), BrokerError> {
        let sub = self.subscriber.as_ref().ok_or(BrokerError::Disconnected)?;
        let (tx, rx) = oneshot::channel();
        sub.send(make(tx)).await.map_err(|_| BrokerError::Disconnected)?;
        rx.await.map_err(|_| BrokerError::Disconnected)?
    }
}

/// The stamp's `at`: this node's clock, in ms since the Unix epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

async fn timed<T>(fut: impl std::future::Future<Output = Result<T, BrokerError>>) -> Result<T, BrokerError> {
    timed_for(COMMAND_TIMEOUT, fut).await
}

async fn timed_for<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T, BrokerError>>,
) -> Result<T, BrokerError> {
    tokio::time::timeout(limit, fut).await.map_err(|_| BrokerError::Timeout(limit))?
}

/// Parses one group's reply of `WINDOW_SCRIPT`.
fn window_read(after: Position, reply: Vec<Vec<u8>>) -> WindowRead {
    let number = |bytes: &[u8]| std::str::from_utf8(bytes).ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    let mut fields = reply.into_iter();
    let epoch = fields.next().map_or(0, |b| number(&b));
    let seq = fields.next().map_or(0, |b| number(&b));
    let mut entries = Vec::new();
    while let (Some(id), Some(payload)) = (fields.next(), fields.next()) {
        let entry_seq = number(id.split(|b| *b == b'-').next().unwrap_or_default());
        entries.push((entry_seq, Bytes::from(payload)));
    }
    WindowRead::assemble(after, Position { epoch, seq }, entries)
}

#[async_trait]
impl PubSub for RedisBroker {
    async fn publish(&self, group: &Group, payload: Bytes) -> Result<(), BrokerError> {
        self.publish_all(&[(group.clone(), payload)], &[]).await
    }

    async fn publish_all(&self, publications: &[(Group, Bytes)], jobs: &[Bytes]) -> Result<(), BrokerError> {
        if publications.is_empty() && jobs.is_empty() {
            return Ok(());
        }
        self.run_publish(publications, jobs, None).await.map(|_| ())
    }

    async fn publish_once(
        &self,
        once: &Once,
        group: &Group,
        payload: Bytes,
        job: Bytes,
    ) -> Result<Option<Bytes>, BrokerError> {
        self.run_publish(&[(group.clone(), payload)], &[job], Some(once)).await
    }

    async fn subscribe(&self, groups: &[Group]) -> Result<(), BrokerError> {
        self.request(|ack| SubscriberRequest::Subscribe(groups.to_vec(), ack)).await
    }

    async fn unsubscribe(&self, groups: &[Group]) -> Result<(), BrokerError> {
        self.request(|ack| SubscriberRequest::Unsubscribe(groups.to_vec(), ack)).await
    }

    async fn reconnect_subscriber(&self) -> Result<(), BrokerError> {
        self.request(SubscriberRequest::Reconnect).await
    }

    async fn ping(&self) -> Result<(), BrokerError> {
        timed(async {
            let mut conn = self.commands.conn().await?;
            let _: String = redis::cmd("PING").query_async(&mut conn).await?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl GroupLog for RedisBroker {
    async fn positions(&self, groups: &[Group]) -> Result<Vec<Position>, BrokerError> {
        timed(self.per_slot(groups, bucket_of, |groups| async move {
            let mut conn = self.commands.conn().await?;
            let mut pipe = redis::pipe();
            for group in &groups {
                pipe.cmd("HMGET").arg(self.keys.counter(group)).arg("epoch").arg("seq");
            }
            let found: Vec<(Option<u64>, Option<u64>)> = pipe.query_async(&mut conn).await?;
            Ok(found
                .into_iter()
                .map(|(epoch, seq)| Position { epoch: epoch.unwrap_or(0), seq: seq.unwrap_or(0) })
                .collect())
        }))
        .await
    }

    async fn window_since(&self, reads: &[(Group, Position)]) -> Result<Vec<WindowRead>, BrokerError> {
        timed(self.per_slot(
            reads,
            |(group, _)| bucket_of(group),
            |reads| async move {
                let mut conn = self.commands.conn().await?;
                let mut invocation = WINDOW_SCRIPT.prepare_invoke();
                for (group, after) in &reads {
                    invocation.key(self.keys.counter(group)).key(self.keys.window(group));
                    invocation.arg(after.epoch).arg(after.seq);
                }
                let replies: Vec<Vec<Vec<u8>>> = invocation.invoke_async(&mut conn).await?;
                Ok(reads.iter().zip(replies).map(|((_, after), reply)| window_read(*after, reply)).collect())
            },
        ))
        .await
    }

    async fn window_after(&self, group: &Group, seq: u64) -> Result<WindowRead, BrokerError> {
        timed(async {
            let mut conn = self.commands.conn().await?;
            let mut invocation = WINDOW_SCRIPT.prepare_invoke();
            invocation.key(self.keys.counter(group)).key(self.keys.window(group)).arg("current").arg(seq);
            let mut replies: Vec<Vec<Vec<u8>>> = invocation.invoke_async(&mut conn).await?;
            let reply = replies.pop().ok_or(BrokerError::Disconnected)?;
            // The epoch asked for is the one the read finds.
            let epoch = reply.first().and_then(|b| std::str::from_utf8(b).ok()?.parse().ok()).unwrap_or(0);
            Ok(window_read(Position { epoch, seq }, reply))
        })
        .await
    }
}
