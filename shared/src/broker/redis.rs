//! The Redis broker of cluster mode.
//!
//! Commands (PUBLISH, the MULTI with XADD, the stream reads) go through a deadpool pool. Pub/sub
//! has one dedicated connection per node, owned by the subscriber task: it turns SUBSCRIBE
//! requests into commands on that connection, forwards publications to the node's inbox, and on
//! losing the connection reconnects with backoff and reports `Inbound::Reconnected`.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use deadpool_redis::{Pool, PoolConfig, Runtime, Timeouts};
use futures_util::StreamExt;
use redis::streams::{StreamAutoClaimOptions, StreamAutoClaimReply, StreamReadOptions, StreamReadReply};
use redis::AsyncCommands;
use tokio::sync::{mpsc, oneshot};

use super::{Broker, BrokerError, Inbound, INBOX_CAPACITY};
use crate::event::Group;
use crate::jobs::JobEntry;
use crate::keys::Keys;

/// Longest a single command may take before the caller hears `Timeout` (and a client `unavailable`).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

pub struct RedisBroker {
    pool: Pool,
    keys: Keys,
    /// Requests to the subscriber task; `None` for a broker that only publishes (the worker).
    subscriber: Option<mpsc::Sender<SubscriberRequest>>,
}

enum SubscriberRequest {
    Subscribe(Vec<String>, oneshot::Sender<Result<(), BrokerError>>),
    Unsubscribe(Vec<String>, oneshot::Sender<Result<(), BrokerError>>),
}

/// The pub/sub connection's payload field name in the jobs stream entries.
const JOB_FIELD: &str = "job";

impl RedisBroker {
    /// A broker for commands and the jobs stream only (no pub/sub inbox).
    pub fn new(url: &str, prefix: &str) -> Result<Self, BrokerError> {
        let mut cfg = deadpool_redis::Config::from_url(url);
        cfg.pool = Some(PoolConfig {
            max_size: 32,
            timeouts: Timeouts {
                wait: Some(COMMAND_TIMEOUT),
                create: Some(COMMAND_TIMEOUT),
                recycle: Some(COMMAND_TIMEOUT),
            },
            ..Default::default()
        });
        let pool = cfg.create_pool(Some(Runtime::Tokio1)).map_err(|e| {
            BrokerError::Redis(redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "pool", e.to_string())))
        })?;
        Ok(Self { pool, keys: Keys::new(prefix), subscriber: None })
    }

    /// A gateway node's broker: commands plus the pub/sub connection feeding the returned inbox.
    pub fn with_subscriber(url: &str, prefix: &str) -> Result<(Self, mpsc::Receiver<Inbound>), BrokerError> {
        let mut broker = Self::new(url, prefix)?;
        let client = redis::Client::open(url)?;
        let (req_tx, req_rx) = mpsc::channel(256);
        let (inbox_tx, inbox_rx) = mpsc::channel(INBOX_CAPACITY);
        tokio::spawn(subscriber_task(client, broker.keys.clone(), req_rx, inbox_tx));
        broker.subscriber = Some(req_tx);
        Ok((broker, inbox_rx))
    }

    /// The command pool, shared with the presence store.
    pub fn pool(&self) -> deadpool_redis::Pool {
        self.pool.clone()
    }

    async fn conn(&self) -> Result<deadpool_redis::Connection, BrokerError> {
        Ok(self.pool.get().await?)
    }

    async fn ensure_group(&self, conn: &mut deadpool_redis::Connection) -> Result<(), BrokerError> {
        // "0": a group created after jobs were appended still consumes them from the start.
        let created: Result<(), redis::RedisError> =
            conn.xgroup_create_mkstream(self.keys.jobs_stream(), self.keys.jobs_group(), "0").await;
        match created {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn read_group(
        &self,
        conn: &mut deadpool_redis::Connection,
        consumer: &str,
        max: usize,
        block: Duration,
    ) -> Result<Vec<redis::streams::StreamId>, BrokerError> {
        let opts = StreamReadOptions::default()
            .group(self.keys.jobs_group(), consumer)
            .count(max)
            .block(block.as_millis() as usize);
        let reply: Option<StreamReadReply> = conn.xread_options(&[self.keys.jobs_stream()], &[">"], &opts).await?;
        Ok(reply.map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect()).unwrap_or_default())
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

async fn timed<T>(fut: impl std::future::Future<Output = Result<T, BrokerError>>) -> Result<T, BrokerError> {
    tokio::time::timeout(COMMAND_TIMEOUT, fut).await.map_err(|_| BrokerError::Timeout(COMMAND_TIMEOUT))?
}

fn entries(ids: Vec<redis::streams::StreamId>) -> Vec<JobEntry> {
    ids.into_iter()
        .filter_map(|entry| match entry.map.get(JOB_FIELD) {
            Some(redis::Value::BulkString(bytes)) => {
                Some(JobEntry { id: entry.id, payload: Bytes::from(bytes.clone()) })
            }
            _ => None,
        })
        .collect()
}

fn is_nogroup(e: &BrokerError) -> bool {
    matches!(e, BrokerError::Redis(r) if r.code() == Some("NOGROUP"))
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish(&self, group: &Group, payload: Bytes) -> Result<(), BrokerError> {
        timed(async {
            let mut conn = self.conn().await?;
            let _: i64 = conn.publish(self.keys.channel(group), payload.as_ref()).await?;
            Ok(())
        })
        .await
    }

    async fn publish_and_enqueue(&self, group: &Group, payload: Bytes, job: Bytes) -> Result<(), BrokerError> {
        timed(async {
            let mut conn = self.conn().await?;
            let _: () = redis::pipe()
                .atomic()
                .publish(self.keys.channel(group), payload.as_ref())
                .ignore()
                .xadd(self.keys.jobs_stream(), "*", &[(JOB_FIELD, job.as_ref())])
                .ignore()
                .query_async(&mut *conn)
                .await?;
            Ok(())
        })
        .await
    }

    async fn enqueue(&self, job: Bytes) -> Result<(), BrokerError> {
        timed(async {
            let mut conn = self.conn().await?;
            let _: String = conn.xadd(self.keys.jobs_stream(), "*", &[(JOB_FIELD, job.as_ref())]).await?;
            Ok(())
        })
        .await
    }

    async fn subscribe(&self, groups: &[Group]) -> Result<(), BrokerError> {
        let channels = groups.iter().map(|g| self.keys.channel(g)).collect();
        self.request(|ack| SubscriberRequest::Subscribe(channels, ack)).await
    }

    async fn unsubscribe(&self, groups: &[Group]) -> Result<(), BrokerError> {
        let channels = groups.iter().map(|g| self.keys.channel(g)).collect();
        self.request(|ack| SubscriberRequest::Unsubscribe(channels, ack)).await
    }

    async fn read_jobs(&self, consumer: &str, max: usize, block: Duration) -> Result<Vec<JobEntry>, BrokerError> {
        let mut conn = self.conn().await?;
        match self.read_group(&mut conn, consumer, max, block).await {
            Ok(ids) => Ok(entries(ids)),
            // First start, or Redis lost its data: create the group and read again.
            Err(e) if is_nogroup(&e) => {
                self.ensure_group(&mut conn).await?;
                Ok(entries(self.read_group(&mut conn, consumer, max, block).await?))
            }
            Err(e) => Err(e),
        }
    }

    async fn claim_stale_jobs(
        &self,
        consumer: &str,
        min_idle: Duration,
        max: usize,
    ) -> Result<Vec<JobEntry>, BrokerError> {
        timed(async {
            let mut conn = self.conn().await?;
            let opts = StreamAutoClaimOptions::default().count(max);
            let reply: Result<StreamAutoClaimReply, redis::RedisError> = conn
                .xautoclaim_options(
                    self.keys.jobs_stream(),
                    self.keys.jobs_group(),
                    consumer,
                    min_idle.as_millis() as u64,
                    "0-0",
                    opts,
                )
                .await;
            match reply {
                Ok(reply) => Ok(entries(reply.claimed)),
                Err(e) if e.code() == Some("NOGROUP") => {
                    self.ensure_group(&mut conn).await?;
                    Ok(Vec::new())
                }
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    async fn ack_jobs(&self, ids: &[String]) -> Result<(), BrokerError> {
        if ids.is_empty() {
            return Ok(());
        }
        timed(async {
            let mut conn = self.conn().await?;
            // XACK, then XDEL: the stream keeps only work not yet done, so it does not grow forever.
            let _: () = redis::pipe()
                .atomic()
                .xack(self.keys.jobs_stream(), self.keys.jobs_group(), ids)
                .ignore()
                .xdel(self.keys.jobs_stream(), ids)
                .ignore()
                .query_async(&mut *conn)
                .await?;
            Ok(())
        })
        .await
    }

    async fn ping(&self) -> Result<(), BrokerError> {
        timed(async {
            let mut conn = self.conn().await?;
            let _: String = redis::cmd("PING").query_async(&mut *conn).await?;
            Ok(())
        })
        .await
    }
}

/// Owns the node's pub/sub connection for the life of the process.
async fn subscriber_task(
    client: redis::Client,
    keys: Keys,
    mut requests: mpsc::Receiver<SubscriberRequest>,
    inbox: mpsc::Sender<Inbound>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let connected = tokio::time::timeout(COMMAND_TIMEOUT, client.get_async_pubsub()).await;
        let pubsub = match connected {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "redis pub/sub: connect failed, retrying");
                if !refuse_requests_for(backoff, &mut requests).await {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
            Err(_) => {
                tracing::warn!("redis pub/sub: connect timed out, retrying");
                if !refuse_requests_for(backoff, &mut requests).await {
                    return;
                }
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        tracing::info!("redis pub/sub: connected");
        let (mut sink, mut stream) = pubsub.split();
        if inbox.send(Inbound::Reconnected).await.is_err() {
            return; // The node is gone.
        }
        loop {
            tokio::select! {
                request = requests.recv() => {
                    let Some(request) = request else { return };
                    let result = match request {
                        SubscriberRequest::Subscribe(channels, ack) => {
                            let r = timed(async { Ok(sink.subscribe(&channels).await?) }).await;
                            let failed = r.is_err();
                            let _ = ack.send(r);
                            failed
                        }
                        SubscriberRequest::Unsubscribe(channels, ack) => {
                            let r = timed(async { Ok(sink.unsubscribe(&channels).await?) }).await;
                            let failed = r.is_err();
                            let _ = ack.send(r);
                            failed
                        }
                    };
                    if result {
                        break; // Treat a failed command as a lost connection: reconnect and resubscribe.
                    }
                }
                message = stream.next() => {
                    let Some(message) = message else { break };
                    let Some(group) = keys.group_of(message.get_channel_name()) else { continue };
                    let inbound = Inbound::Message {
                        group: Group::from_name(group),
                        payload: Bytes::copy_from_slice(message.get_payload_bytes()),
                    };
                    if inbox.send(inbound).await.is_err() {
                        return;
                    }
                }
            }
        }
        tracing::warn!("redis pub/sub: connection lost, reconnecting");
        if inbox.send(Inbound::Disconnected).await.is_err() {
            return;
        }
    }
}

/// Answers every request with `Disconnected` for `wait`; false when the broker was dropped.
async fn refuse_requests_for(wait: Duration, requests: &mut mpsc::Receiver<SubscriberRequest>) -> bool {
    let deadline = tokio::time::sleep(wait);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => return true,
            request = requests.recv() => match request {
                None => return false,
                Some(SubscriberRequest::Subscribe(_, ack) | SubscriberRequest::Unsubscribe(_, ack)) => {
                    let _ = ack.send(Err(BrokerError::Disconnected));
                }
            },
        }
    }
}
