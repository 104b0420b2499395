//! The Redis broker of cluster mode.
//!
//! Commands (the publish script, window reads, acks, claims) go through a deadpool pool. Pub/sub
//! has one dedicated connection per node, owned by the subscriber task: it turns SUBSCRIBE
//! requests into commands on that connection, forwards publications to the node's inbox, and on
//! losing the connection reconnects with backoff and reports `Inbound::Reconnected`.
//!
//! Deadlines: every command on the pool (the broker's and the presence store's) has a response
//! timeout of `COMMAND_TIMEOUT`, and the broker also bounds each of its calls, pool wait included,
//! by it. Blocking stream reads (XREADGROUP BLOCK) use a connection of their own with no client
//! response timeout (the client's 500 ms default would fail a read that is merely waiting), bounded
//! by the broker at BLOCK plus `COMMAND_TIMEOUT`; so a read that waits never delays a publish
//! queued behind it on a shared connection either.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use deadpool_redis::{Pool, PoolConfig, Runtime, Timeouts};
use futures_util::StreamExt;
use redis::streams::{StreamAutoClaimOptions, StreamAutoClaimReply, StreamReadOptions, StreamReadReply};
use redis::AsyncCommands;
use tokio::sync::{mpsc, oneshot};

use super::{BrokerError, GroupLog, Inbound, JobQueue, Once, PubSub, Publication, WindowRead, INBOX_CAPACITY};
use crate::config::GroupWindow;
use crate::event::{Group, Position};
use crate::jobs::{DeadLetter, JobEntry};
use crate::keys::Keys;

/// Longest a single command may take before the caller hears `Timeout` (and a client `unavailable`).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// A group's counter lives this long after its last publication (a new epoch after that).
const COUNTER_TTL: Duration = Duration::from_secs(24 * 3600);

/// Numbers, windows and publishes each publication, and appends the jobs, in one atomic step
/// (`Broker::publish_all`). The stamp is `event::stamp`'s, byte for byte; each job gets the first
/// publication's position, as `jobs::stamp` writes it (where a stored chat message stands in its chat).
/// KEYS: the jobs stream, then each publication's counter and window.
/// ARGV: window length, window TTL (s), counter TTL (s), publication count n, then each
/// publication's channel and payload, then the jobs.
const PUBLISH_SCRIPT: &str = r#"
local len, ttl, counter_ttl, n, once = tonumber(ARGV[1]), ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
if once > 0 then
  local first = redis.call('GET', KEYS[2 * n + 2])
  if first then return first end
  redis.call('SET', KEYS[2 * n + 2], ARGV[7], 'EX', once)
end
local function stamped(payload, head)
  if head == nil or string.sub(payload, 1, 1) ~= '{' then return payload end
  local rest = string.sub(payload, 2)
  local sep = ','
  if string.match(rest, '^%s*}') then sep = '' end
  return head .. sep .. rest
end
local job_head = nil
for i = 1, n do
  local counter, window = KEYS[2 * i], KEYS[2 * i + 1]
  local channel = ARGV[4 + 2 * i]
  local epoch = redis.call('HGET', counter, 'epoch')
  local now = redis.call('TIME')
  local at = now[1] .. string.format('%03d', math.floor(tonumber(now[2]) / 1000))
  if not epoch then
    -- A new counter starts at its creation time in ms (Position::counter_start).
    epoch = now[1] .. string.format('%06d', tonumber(now[2]))
    redis.call('HSET', counter, 'epoch', epoch, 'seq', at)
    redis.call('DEL', window)
  end
  local seq = redis.call('HINCRBY', counter, 'seq', 1)
  redis.call('EXPIRE', counter, counter_ttl)
  local head = '{"seq":' .. seq .. ',"epoch":' .. epoch .. ',"at":' .. at
  job_head = job_head or ('{"group_seq":' .. seq .. ',"group_epoch":' .. epoch)
  local payload = stamped(ARGV[5 + 2 * i], head)
  if len > 0 then
    redis.call('XADD', window, 'MAXLEN', '~', len, seq .. '-0', 'p', payload)
    redis.call('EXPIRE', window, ttl)
  end
  redis.call('PUBLISH', channel, payload)
end
for j = 6 + 2 * n, #ARGV do
  redis.call('XADD', KEYS[1], '*', 'job', stamped(ARGV[j], job_head))
end
return n
"#;

/// Each group's current position and its window after a position, read atomically.
/// KEYS: each group's counter and window. ARGV: each group's epoch and seq asked for.
/// Returns per group `{epoch, seq, id1, payload1, id2, payload2, ...}`.
const WINDOW_SCRIPT: &str = r#"
local out = {}
for i = 1, #KEYS / 2 do
  local counter, window = KEYS[2 * i - 1], KEYS[2 * i]
  local epoch, after = ARGV[2 * i - 1], ARGV[2 * i]
  local at = redis.call('HMGET', counter, 'epoch', 'seq')
  local read = {at[1] or '0', at[2] or '0'}
  local from = '-'
  if read[1] == epoch then from = '(' .. after .. '-0' end
  for _, entry in ipairs(redis.call('XRANGE', window, from, '+')) do
    table.insert(read, entry[1])
    table.insert(read, entry[2][2])
  end
  out[i] = read
end
return out
"#;

impl RedisBroker {
    /// `PUBLISH_SCRIPT`: the publications and jobs, unless `once` names a send already made
    /// (then its first payload is returned and nothing happens).
    async fn run_publish(
        &self,
        publications: &[(Group, Bytes)],
        jobs: &[Bytes],
        once: Option<&Once>,
    ) -> Result<Option<Bytes>, BrokerError> {
        timed(async {
            let mut conn = self.conn().await?;
            let mut invocation = self.publish_script.prepare_invoke();
            invocation.key(self.keys.jobs_stream());
            invocation
                .arg(self.window.len)
                .arg(self.window.ttl.as_secs())
                .arg(COUNTER_TTL.as_secs())
                .arg(publications.len())
                .arg(once.map(|o| o.ttl.as_secs().max(1)).unwrap_or(0));
            for (group, payload) in publications {
                invocation.key(self.keys.counter(group)).key(self.keys.window(group));
                invocation.arg(self.keys.channel(group)).arg(payload.as_ref());
            }
            if let Some(once) = once {
                invocation.key(self.keys.sent(&once.id));
            }
            for job in jobs {
                invocation.arg(job.as_ref());
            }
            match invocation.invoke_async::<redis::Value>(&mut *conn).await? {
                redis::Value::BulkString(first) => Ok(Some(Bytes::from(first))),
                _ => Ok(None),
            }
        })
        .await
    }
}

pub struct RedisBroker {
    pool: Pool,
    /// For blocking stream reads only (the worker's XREADGROUP); made on first use, dropped after
    /// a read that missed its deadline (Redis may still be blocking on it).
    reader: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
    client: redis::Client,
    keys: Keys,
    window: GroupWindow,
    publish_script: redis::Script,
    window_script: redis::Script,
    /// Requests to the subscriber task; `None` for a broker that only publishes (the worker).
    subscriber: Option<mpsc::Sender<SubscriberRequest>>,
}

enum SubscriberRequest {
    Subscribe(Vec<String>, oneshot::Sender<Result<(), BrokerError>>),
    Unsubscribe(Vec<String>, oneshot::Sender<Result<(), BrokerError>>),
    /// Drop the connection and make a new one (it stopped delivering without closing).
    Reconnect(oneshot::Sender<Result<(), BrokerError>>),
}

/// The pub/sub connection's payload field name in the jobs stream entries.
const JOB_FIELD: &str = "job";

impl RedisBroker {
    /// A broker for commands and the jobs stream only (no pub/sub inbox).
    pub fn new(url: &str, prefix: &str) -> Result<Self, BrokerError> {
        let pool_config = PoolConfig {
            max_size: 32,
            timeouts: Timeouts {
                wait: Some(COMMAND_TIMEOUT),
                create: Some(COMMAND_TIMEOUT),
                recycle: Some(COMMAND_TIMEOUT),
            },
            ..Default::default()
        };
        let manager = deadpool_redis::Manager::new_with_config(url, connection_config(Some(COMMAND_TIMEOUT)))?;
        let pool = Pool::builder(manager).config(pool_config).runtime(Runtime::Tokio1).build().map_err(|e| {
            BrokerError::Redis(redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "pool", e.to_string())))
        })?;
        let client = redis::Client::open(url)?;
        Ok(Self {
            pool,
            reader: tokio::sync::Mutex::new(None),
            client,
            keys: Keys::new(prefix),
            window: GroupWindow::default(),
            publish_script: redis::Script::new(PUBLISH_SCRIPT),
            window_script: redis::Script::new(WINDOW_SCRIPT),
            subscriber: None,
        })
    }

    /// Keeps each group's window as `window` says (the default otherwise).
    pub fn with_window(mut self, window: GroupWindow) -> Self {
        self.window = window;
        self
    }

    /// A gateway node's broker: commands plus the pub/sub connection feeding the returned inbox.
    pub fn with_subscriber(
        url: &str,
        prefix: &str,
        window: GroupWindow,
    ) -> Result<(Self, mpsc::Receiver<Inbound>), BrokerError> {
        let mut broker = Self::new(url, prefix)?.with_window(window);
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
        conn: &mut redis::aio::MultiplexedConnection,
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

/// A connection with this response timeout (see the module comment) and a bounded connect.
fn connection_config(response_timeout: Option<Duration>) -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new()
        .set_response_timeout(response_timeout)
        .set_connection_timeout(Some(COMMAND_TIMEOUT))
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

fn field_text(entry: &redis::streams::StreamId, field: &str) -> String {
    match entry.map.get(field) {
        Some(redis::Value::BulkString(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
        _ => String::new(),
    }
}

fn dead_letter_of(entry: redis::streams::StreamId) -> Option<DeadLetter> {
    let (error, job_id) = (field_text(&entry, "error"), field_text(&entry, "job_id"));
    match entry.map.get(JOB_FIELD) {
        Some(redis::Value::BulkString(bytes)) => {
            Some(DeadLetter { payload: Bytes::from(bytes.clone()), id: entry.id, job_id, error })
        }
        _ => None,
    }
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

fn is_nogroup(e: &BrokerError) -> bool {
    matches!(e, BrokerError::Redis(r) if r.code() == Some("NOGROUP"))
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
        let channels = groups.iter().map(|g| self.keys.channel(g)).collect();
        self.request(|ack| SubscriberRequest::Subscribe(channels, ack)).await
    }

    async fn unsubscribe(&self, groups: &[Group]) -> Result<(), BrokerError> {
        let channels = groups.iter().map(|g| self.keys.channel(g)).collect();
        self.request(|ack| SubscriberRequest::Unsubscribe(channels, ack)).await
    }

    async fn reconnect_subscriber(&self) -> Result<(), BrokerError> {
        self.request(SubscriberRequest::Reconnect).await
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

#[async_trait]
impl GroupLog for RedisBroker {
    async fn positions(&self, groups: &[Group]) -> Result<Vec<Position>, BrokerError> {
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        timed(async {
            let mut conn = self.conn().await?;
            let mut pipe = redis::pipe();
            for group in groups {
                pipe.cmd("HMGET").arg(self.keys.counter(group)).arg("epoch").arg("seq");
            }
            let found: Vec<(Option<u64>, Option<u64>)> = pipe.query_async(&mut *conn).await?;
            Ok(found
                .into_iter()
                .map(|(epoch, seq)| Position { epoch: epoch.unwrap_or(0), seq: seq.unwrap_or(0) })
                .collect())
        })
        .await
    }

    async fn window_since(&self, reads: &[(Group, Position)]) -> Result<Vec<WindowRead>, BrokerError> {
        if reads.is_empty() {
            return Ok(Vec::new());
        }
        timed(async {
            let mut conn = self.conn().await?;
            let mut invocation = self.window_script.prepare_invoke();
            for (group, after) in reads {
                invocation.key(self.keys.counter(group)).key(self.keys.window(group));
                invocation.arg(after.epoch).arg(after.seq);
            }
            let replies: Vec<Vec<Vec<u8>>> = invocation.invoke_async(&mut *conn).await?;
            Ok(reads.iter().zip(replies).map(|((_, after), reply)| window_read(*after, reply)).collect())
        })
        .await
    }
}

#[async_trait]
impl JobQueue for RedisBroker {
    async fn enqueue(&self, job: Bytes) -> Result<(), BrokerError> {
        self.publish_all(&[], &[job]).await
    }

    async fn read_jobs(&self, consumer: &str, max: usize, block: Duration) -> Result<Vec<JobEntry>, BrokerError> {
        // One reader at a time per broker: the worker's steps are sequential anyway.
        let mut reader = self.reader.lock().await;
        if reader.is_none() {
            let config = connection_config(None);
            let connect = self.client.get_multiplexed_async_connection_with_config(&config);
            *reader = Some(timed(async { Ok(connect.await?) }).await?);
        }
        let conn = reader.as_mut().expect("just connected");
        let read = timed_for(block + COMMAND_TIMEOUT, async {
            match self.read_group(conn, consumer, max, block).await {
                Ok(ids) => Ok(entries(ids)),
                // First start, or Redis lost its data: create the group and read again.
                Err(e) if is_nogroup(&e) => {
                    self.ensure_group(&mut self.conn().await?).await?;
                    Ok(entries(self.read_group(conn, consumer, max, block).await?))
                }
                Err(e) => Err(e),
            }
        })
        .await;
        if matches!(read, Err(BrokerError::Timeout(_) | BrokerError::Redis(_))) {
            // Redis may still be blocking on it, or it is broken: start afresh next time.
            *reader = None;
        }
        read
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

    async fn dead_letter(&self, entry: &JobEntry, error: &str) -> Result<(), BrokerError> {
        timed(async {
            let mut conn = self.conn().await?;
            let fields: [(&str, &[u8]); 3] =
                [(JOB_FIELD, entry.payload.as_ref()), ("error", error.as_bytes()), ("job_id", entry.id.as_bytes())];
            let _: () = redis::pipe()
                .atomic()
                .xadd(self.keys.dead_letters(), "*", &fields)
                .ignore()
                .xack(self.keys.jobs_stream(), self.keys.jobs_group(), &[&entry.id])
                .ignore()
                .xdel(self.keys.jobs_stream(), &[&entry.id])
                .ignore()
                .query_async(&mut *conn)
                .await?;
            Ok(())
        })
        .await
    }

    async fn dead_letter_count(&self) -> Result<u64, BrokerError> {
        timed(async { Ok(self.conn().await?.xlen(self.keys.dead_letters()).await?) }).await
    }

    async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, BrokerError> {
        timed(async {
            let mut conn = self.conn().await?;
            let reply: redis::streams::StreamRangeReply =
                conn.xrange_count(self.keys.dead_letters(), "-", "+", max).await?;
            Ok(reply.ids.into_iter().filter_map(dead_letter_of).collect())
        })
        .await
    }

    async fn replay_dead_letter(&self, id: &str) -> Result<bool, BrokerError> {
        timed(async {
            let mut conn = self.conn().await?;
            let reply: redis::streams::StreamRangeReply = conn.xrange(self.keys.dead_letters(), id, id).await?;
            let Some(letter) = reply.ids.into_iter().find_map(dead_letter_of) else { return Ok(false) };
            let _: () = redis::pipe()
                .atomic()
                .xadd(self.keys.jobs_stream(), "*", &[(JOB_FIELD, letter.payload.as_ref())])
                .ignore()
                .xdel(self.keys.dead_letters(), &[&letter.id])
                .ignore()
                .query_async(&mut *conn)
                .await?;
            Ok(true)
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
                        SubscriberRequest::Reconnect(ack) => {
                            tracing::warn!("redis pub/sub: dropping a connection that stopped delivering");
                            let _ = ack.send(Ok(()));
                            true
                        }
                    };
                    if result {
                        break; // Treat a failed command as a lost connection: reconnect and resubscribe.
                    }
                }
                message = stream.next() => {
                    let Some(message) = message else { break };
                    let Some(group) = keys.group_of(message.get_channel_name()) else { continue };
                    let payload = Bytes::copy_from_slice(message.get_payload_bytes());
                    let inbound = Inbound::Message { group: Group::from_name(group), publication: Publication::received(payload) };
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
                // Already reconnecting.
                Some(SubscriberRequest::Reconnect(ack)) => {
                    let _ = ack.send(Ok(()));
                }
            },
        }
    }
}
