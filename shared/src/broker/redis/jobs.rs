//! The jobs streams: one per bucket (`rt:{05ad}:jobs`), each in the slot of its groups, so a job
//! is appended in the same atomic step as its publication on a Redis Cluster too.
//!
//! A worker reads all of them at once without spinning: on one Redis one reader task blocks in
//! one `XREADGROUP … BLOCK … STREAMS` over all sixteen; on a cluster one reader per bucket (a
//! read may not cross slots), each on a connection of its own. What they read goes to
//! `read_jobs`. Acks of one batch are one script per slot (one on one Redis).
//! Entry ids handed out name their bucket (`1712345678901-0@5`), so acks, dead letters and
//! replays go back to the right stream.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::future::try_join_all;
use redis::streams::{StreamAutoClaimOptions, StreamAutoClaimReply, StreamReadOptions, StreamReadReply};
use redis::AsyncCommands;
use tokio::sync::mpsc;

use super::scripts::{ACK_SCRIPT, CLAIM_OF_SCRIPT, DEAD_LETTER_SCRIPT, REPLAY_SCRIPT, WORKER_BEAT_SCRIPT};
use super::{timed, timed_for, RedisBroker, MAX_BACKOFF};
use crate::broker::{BrokerError, JobQueue};
use crate::connection::{Commands, Conn, COMMAND_TIMEOUT};
use crate::jobs::{DeadLetter, JobEntry};
use crate::keys::{Keys, BUCKETS};

/// The payload field of a jobs stream entry.
const JOB_FIELD: &str = "job";
/// How long one reader's `XREADGROUP` waits for new jobs.
const READ_BLOCK: Duration = Duration::from_secs(5);

/// The bucket of jobs appended without a publication: all in one stream, so they are read in
/// the order they were appended (only tests and tools append such jobs).
pub(super) const LONE_JOBS_BUCKET: usize = 0;

/// A handed-out entry id: the stream id and its bucket.
fn entry_id(bucket: usize, id: &str) -> String {
    format!("{id}@{bucket}")
}

/// The bucket and stream id of a handed-out entry id.
fn split_id(id: &str) -> Result<(usize, &str), BrokerError> {
    id.rsplit_once('@')
        .and_then(|(id, bucket)| Some((bucket.parse::<usize>().ok().filter(|b| *b < BUCKETS)?, id)))
        .ok_or_else(|| {
            BrokerError::Redis(redis::RedisError::from((
                redis::ErrorKind::Client,
                "job ids look like 1712345678901-0@5 (the stream id, then its bucket)",
                id.to_owned(),
            )))
        })
}

fn entries(bucket: usize, ids: Vec<redis::streams::StreamId>) -> Vec<JobEntry> {
    ids.into_iter()
        .filter_map(|entry| match entry.map.get(JOB_FIELD) {
            Some(redis::Value::BulkString(bytes)) => {
                Some(JobEntry { id: entry_id(bucket, &entry.id), payload: Bytes::from(bytes.clone()) })
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

fn dead_letter_of(bucket: usize, entry: redis::streams::StreamId) -> Option<DeadLetter> {
    let (error, job_id) = (field_text(&entry, "error"), field_text(&entry, "job_id"));
    match entry.map.get(JOB_FIELD) {
        Some(redis::Value::BulkString(bytes)) => {
            Some(DeadLetter { payload: Bytes::from(bytes.clone()), id: entry_id(bucket, &entry.id), job_id, error })
        }
        _ => None,
    }
}

fn is_nogroup(e: &redis::RedisError) -> bool {
    e.code() == Some("NOGROUP")
}

/// Creates the workers' consumer group on `bucket`'s stream (and the stream) if missing.
async fn ensure_group(conn: &mut Conn, keys: &Keys, bucket: usize) -> Result<(), BrokerError> {
    // "0": a group created after jobs were appended still consumes them from the start.
    let created: Result<(), redis::RedisError> =
        conn.xgroup_create_mkstream(keys.jobs_stream(bucket), keys.jobs_group(), "0").await;
    match created {
        Ok(()) => Ok(()),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The reader tasks of one consumer, and what they read.
pub(super) struct Readers {
    read: mpsc::Receiver<Result<Vec<JobEntry>, BrokerError>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Readers {
    fn start(commands: &Commands, keys: &Keys, consumer: &str, max: usize) -> Self {
        let (tx, read) = mpsc::channel(BUCKETS);
        let all: Vec<usize> = (0..BUCKETS).collect();
        let tasks = commands
            .by_slot(&all, |bucket| *bucket)
            .into_iter()
            .map(|buckets| {
                let reader = BucketReader {
                    commands: commands.clone(),
                    keys: keys.clone(),
                    streams: buckets.iter().map(|&bucket| keys.jobs_stream(bucket)).collect(),
                    buckets,
                    consumer: consumer.to_owned(),
                    max,
                };
                tokio::spawn(reader.run(tx.clone()))
            })
            .collect();
        Self { read, tasks }
    }
}

impl Drop for Readers {
    fn drop(&mut self) {
        // A read cut off here that Redis already served stays pending for this consumer, and
        // is claimed by another worker like any job of a worker that stopped.
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Reads the jobs streams of `buckets` (all on one Redis, one on a cluster).
struct BucketReader {
    commands: Commands,
    keys: Keys,
    buckets: Vec<usize>,
    /// Each bucket's stream, in the order of `buckets`.
    streams: Vec<String>,
    consumer: String,
    max: usize,
}

impl BucketReader {
    /// Reads the bucket's new jobs until the broker is dropped; a failure is handed on (the
    /// worker logs it) and the read tried again on a new connection after a pause.
    async fn run(self, out: mpsc::Sender<Result<Vec<JobEntry>, BrokerError>>) {
        let mut conn: Option<Conn> = None;
        let mut backoff = Duration::from_millis(50);
        while !out.is_closed() {
            let read = match conn.as_mut() {
                Some(conn) => timed_for(READ_BLOCK + COMMAND_TIMEOUT, self.read(conn)).await,
                None => match self.commands.blocking_conn().await {
                    Ok(made) => {
                        conn = Some(made);
                        continue;
                    }
                    Err(e) => Err(e),
                },
            };
            match read {
                Ok(read) => {
                    backoff = Duration::from_millis(50);
                    if !read.is_empty() && out.send(Ok(read)).await.is_err() {
                        return;
                    }
                }
                Err(BrokerError::Redis(e)) if is_nogroup(&e) => {
                    // First start, or Redis lost its data: create the group and read again.
                    if let Err(e) = self.ensure_group().await {
                        let _ = out.send(Err(e)).await;
                        tokio::time::sleep(backoff).await;
                    }
                }
                Err(e) => {
                    // Redis may still be blocking on it, or it is broken: start afresh.
                    conn = None;
                    if out.send(Err(e)).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    async fn read(&self, conn: &mut Conn) -> Result<Vec<JobEntry>, BrokerError> {
        let opts = StreamReadOptions::default()
            .group(self.keys.jobs_group(), &self.consumer)
            .count(self.max)
            .block(READ_BLOCK.as_millis() as usize);
        let news = vec![">"; self.streams.len()];
        let reply: Option<StreamReadReply> = conn.xread_options(&self.streams, &news, &opts).await?;
        let mut read = Vec::new();
        for stream in reply.map(|r| r.keys).unwrap_or_default() {
            if let Some(at) = self.streams.iter().position(|s| *s == stream.key) {
                read.extend(entries(self.buckets[at], stream.ids));
            }
        }
        Ok(read)
    }

    async fn ensure_group(&self) -> Result<(), BrokerError> {
        timed(async {
            let mut conn = self.commands.conn().await?;
            for &bucket in &self.buckets {
                ensure_group(&mut conn, &self.keys, bucket).await?;
            }
            Ok(())
        })
        .await
    }
}

impl RedisBroker {
    /// Runs `each` for every bucket side by side and gathers the answers in bucket order.
    async fn each_bucket<R, Fut>(&self, each: impl Fn(usize) -> Fut) -> Result<Vec<R>, BrokerError>
    where
        Fut: std::future::Future<Output = Result<R, BrokerError>>,
    {
        timed(try_join_all((0..BUCKETS).map(each))).await
    }

    /// `ids` by bucket: each bucket's stream ids.
    fn ids_by_bucket(ids: &[String]) -> Result<Vec<Vec<&str>>, BrokerError> {
        let mut by_bucket: Vec<Vec<&str>> = vec![Vec::new(); BUCKETS];
        for id in ids {
            let (bucket, id) = split_id(id)?;
            by_bucket[bucket].push(id);
        }
        Ok(by_bucket)
    }
}

#[async_trait]
impl JobQueue for RedisBroker {
    async fn enqueue(&self, job: Bytes) -> Result<(), BrokerError> {
        self.run_publish(&[], &[job], None).await.map(|_| ())
    }

    async fn read_jobs(&self, consumer: &str, max: usize, block: Duration) -> Result<Vec<JobEntry>, BrokerError> {
        // One caller at a time: the worker's steps are sequential anyway.
        let mut readers = self.readers.lock().await;
        let readers = readers.get_or_insert_with(|| Readers::start(&self.commands, &self.keys, consumer, max));
        let first = match tokio::time::timeout(block, readers.read.recv()).await {
            Err(_) => return Ok(Vec::new()),
            Ok(None) => return Err(BrokerError::Disconnected),
            Ok(Some(read)) => read,
        };
        // Whatever else is ready joins the batch. Failures are the readers' to retry: one is
        // reported only when no jobs came, and older ones (Redis was away) are passed over.
        let (mut jobs, mut failure) = match first {
            Ok(jobs) => (jobs, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        while jobs.len() < max {
            match readers.read.try_recv() {
                Ok(Ok(more)) => jobs.extend(more),
                Ok(Err(e)) => failure = Some(e),
                Err(_) => break,
            }
        }
        match failure {
            Some(e) if jobs.is_empty() => Err(e),
            _ => Ok(jobs),
        }
    }

    async fn claim_stale_jobs(
        &self,
        consumer: &str,
        min_idle: Duration,
        max: usize,
    ) -> Result<Vec<JobEntry>, BrokerError> {
        let claimed = self
            .each_bucket(|bucket| async move {
                let mut conn = self.commands.conn().await?;
                let opts = StreamAutoClaimOptions::default().count(max);
                let stream = self.keys.jobs_stream(bucket);
                let group = self.keys.jobs_group();
                let idle = min_idle.as_millis() as u64;
                let reply: Result<StreamAutoClaimReply, redis::RedisError> =
                    conn.xautoclaim_options(stream, group, consumer, idle, "0-0", opts).await;
                match reply {
                    Ok(reply) => Ok(entries(bucket, reply.claimed)),
                    Err(e) if is_nogroup(&e) => ensure_group(&mut conn, &self.keys, bucket).await.map(|()| Vec::new()),
                    Err(e) => Err(e.into()),
                }
            })
            .await?;
        Ok(claimed.into_iter().flatten().collect())
    }

    async fn worker_beat(&self, consumer: &str, expiry: Duration) -> Result<Vec<(String, Duration)>, BrokerError> {
        timed(async {
            let mut beat = WORKER_BEAT_SCRIPT.prepare_invoke();
            beat.key(self.keys.workers()).arg(consumer).arg(expiry.as_millis() as u64);
            let expired: Vec<(String, u64)> = beat.invoke_async(&mut self.commands.conn().await?).await?;
            Ok(expired.into_iter().map(|(name, ms)| (name, Duration::from_millis(ms))).collect())
        })
        .await
    }

    async fn claim_jobs_of(
        &self,
        consumer: &str,
        dead: &[String],
        forget: &[String],
        max: usize,
    ) -> Result<Vec<JobEntry>, BrokerError> {
        if dead.is_empty() && forget.is_empty() {
            return Ok(Vec::new());
        }
        let all: Vec<usize> = (0..BUCKETS).collect();
        let batches = self.commands.by_slot(&all, |bucket| *bucket);
        let answers = timed(try_join_all(batches.iter().map(|buckets| async move {
            let mut claim = CLAIM_OF_SCRIPT.prepare_invoke();
            for &bucket in buckets {
                claim.key(self.keys.jobs_stream(bucket));
            }
            claim.arg(self.keys.jobs_group()).arg(consumer).arg(max).arg(dead.len()).arg(dead).arg(forget);
            let mut conn = self.commands.conn().await?;
            let reply: Result<(Vec<String>, Vec<Vec<(String, Vec<u8>)>>), redis::RedisError> =
                claim.invoke_async(&mut conn).await;
            match reply {
                Ok((kept, claimed)) => {
                    let entries = buckets.iter().zip(claimed).flat_map(|(&bucket, claimed)| {
                        claimed
                            .into_iter()
                            .map(move |(id, job)| JobEntry { id: entry_id(bucket, &id), payload: Bytes::from(job) })
                    });
                    Ok((kept, entries.collect::<Vec<_>>()))
                }
                // A stream without its group has nothing pending: make it, for the next reads.
                Err(e) if is_nogroup(&e) => {
                    for &bucket in buckets {
                        ensure_group(&mut conn, &self.keys, bucket).await?;
                    }
                    Ok((forget.to_vec(), Vec::new()))
                }
                Err(e) => Err(BrokerError::from(e)),
            }
        })))
        .await?;
        let mut claimed = Vec::new();
        let mut kept = std::collections::HashSet::new();
        for (kept_here, entries) in answers {
            kept.extend(kept_here);
            claimed.extend(entries);
        }
        // Gone from every stream: gone from the heartbeats too.
        let gone: Vec<&String> = forget.iter().filter(|name| !kept.contains(*name)).collect();
        if !gone.is_empty() {
            timed(async {
                let _: i64 = self.commands.conn().await?.zrem(self.keys.workers(), &gone).await?;
                Ok(())
            })
            .await?;
        }
        Ok(claimed)
    }

    async fn ack_jobs(&self, ids: &[String]) -> Result<(), BrokerError> {
        let by_bucket = Self::ids_by_bucket(ids)?;
        let acked: Vec<usize> = (0..BUCKETS).filter(|&bucket| !by_bucket[bucket].is_empty()).collect();
        // One script per slot: on one Redis a whole batch is acked in one round trip.
        let batches = self.commands.by_slot(&acked, |bucket| *bucket);
        let by_bucket = &by_bucket;
        let acked = &acked;
        timed(try_join_all(batches.iter().map(|batch| async move {
            let mut ack = ACK_SCRIPT.prepare_invoke();
            ack.arg(self.keys.jobs_group());
            for &i in batch {
                let bucket = acked[i];
                ack.key(self.keys.jobs_stream(bucket)).arg(by_bucket[bucket].len()).arg(&by_bucket[bucket]);
            }
            let _: i64 = ack.invoke_async(&mut self.commands.conn().await?).await?;
            Ok::<(), BrokerError>(())
        })))
        .await
        .map(|_| ())
    }

    async fn dead_letter(&self, entry: &JobEntry, error: &str) -> Result<(), BrokerError> {
        let (bucket, id) = split_id(&entry.id)?;
        timed(async {
            let mut dead = DEAD_LETTER_SCRIPT.prepare_invoke();
            dead.key(self.keys.jobs_stream(bucket)).key(self.keys.dead_letters(bucket));
            dead.arg(self.keys.jobs_group()).arg(id).arg(entry.payload.as_ref()).arg(error).arg(&entry.id);
            let _: i64 = dead.invoke_async(&mut self.commands.conn().await?).await?;
            Ok(())
        })
        .await
    }

    async fn dead_letter_count(&self) -> Result<u64, BrokerError> {
        let counts = self
            .each_bucket(|bucket| async move {
                let count: u64 = self.commands.conn().await?.xlen(self.keys.dead_letters(bucket)).await?;
                Ok(count)
            })
            .await?;
        Ok(counts.into_iter().sum())
    }

    async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, BrokerError> {
        let read = self
            .each_bucket(|bucket| async move {
                let mut conn = self.commands.conn().await?;
                let reply: redis::streams::StreamRangeReply =
                    conn.xrange_count(self.keys.dead_letters(bucket), "-", "+", max).await?;
                Ok(reply.ids.into_iter().filter_map(|entry| dead_letter_of(bucket, entry)).collect::<Vec<_>>())
            })
            .await?;
        // Oldest first across the buckets (stream ids start with their time in ms).
        let mut letters: Vec<DeadLetter> = read.into_iter().flatten().collect();
        let time_of = |letter: &DeadLetter| -> (u64, u64) {
            let id = letter.id.split('@').next().unwrap_or_default();
            let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
            (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
        };
        letters.sort_by_key(time_of);
        letters.truncate(max);
        Ok(letters)
    }

    async fn replay_dead_letter(&self, id: &str) -> Result<bool, BrokerError> {
        // An id that names no bucket names no dead letter either.
        let Ok((bucket, id)) = split_id(id) else { return Ok(false) };
        timed(async {
            let mut conn = self.commands.conn().await?;
            let dead = self.keys.dead_letters(bucket);
            let reply: redis::streams::StreamRangeReply = conn.xrange(&dead, id, id).await?;
            let Some(letter) = reply.ids.into_iter().find_map(|entry| dead_letter_of(bucket, entry)) else {
                return Ok(false);
            };
            let mut replay = REPLAY_SCRIPT.prepare_invoke();
            replay.key(self.keys.jobs_stream(bucket)).key(&dead).arg(id).arg(letter.payload.as_ref());
            let replayed: i64 = replay.invoke_async(&mut conn).await?;
            Ok(replayed == 1)
        })
        .await
    }
}
