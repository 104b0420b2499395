//! The worker: makes what the gateway accepted durable.
//!
//! # Data path
//!
//! [`Worker::process_batch`] takes one batch from the jobs stream (first any jobs a dead consumer
//! left pending for longer than `claim_idle`, then new ones), decodes them into
//! [`shared::jobs::Job`]s, applies them in one database transaction through
//! [`shared::store::Store::persist`] (idempotent by message id), and acks them only after the
//! commit. A crash anywhere before the ack means redelivery, and redelivery changes nothing.
//! Each message (any app) and each task or focus completion is an activity: the same
//! transaction records it once by id, scores it with the [`rules`] and stores the awards as
//! notifications ([`awards`]), which [`Worker::deliver_awards`] publishes after the commit.
//! A batch the database refuses for its data (not for being away) is split in halves until
//! the refused job stands alone; that job goes to the dead-letter stream with the error
//! (`worker dead-letters` lists them, `--replay ID` puts one back) and the rest is persisted in
//! the same step, so one bad job never holds up anyone else's.
//! [`Worker::run`] calls it in a loop until shutdown; tests call it directly.
//!
//! # Taking over from a dead worker
//!
//! While it runs, a worker beats every [`BEAT`] (`JobQueue::worker_beat`: its name in a Redis
//! sorted set, with when its word runs out, [`BEAT_EXPIRY`]). Each beat lists the workers whose
//! word ran out: a worker killed with jobs in hand. The next step takes their pending jobs at
//! once (`JobQueue::claim_jobs_of`), so a dead worker's jobs are stored about two seconds
//! after it died instead of after `claim_idle`; a worker silent for [`FORGET_AFTER`] is removed
//! from the consumer group. The idle-time claim (`claim_stale_jobs`) stays as the safety net
//! (a worker of a version without heartbeats, a heartbeat lost with Redis's data). Taking over
//! from a worker that was only slow applies its batch twice, which changes nothing: a batch is
//! idempotent by message id.

pub mod awards;
pub mod metrics;
pub mod rules;

use std::sync::Arc;
use std::time::{Duration, Instant};

use shared::broker::{Broker, BrokerError, JobQueue};
use shared::event::{Envelope, Event, Group};
use shared::jobs::{JobEntry, StampedJob};
use shared::store::{Store, StoreError};

pub use awards::Gamification;
pub use rules::Rules;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How often a running worker says it is alive.
pub const BEAT: Duration = Duration::from_millis(500);
/// A worker not heard of for this long is dead, and its pending jobs are taken over. Three
/// beats: one late beat (a busy machine) does not make a live worker look dead.
pub const BEAT_EXPIRY: Duration = Duration::from_millis(1500);
/// A dead worker is removed from the consumer group after this long, once nothing is pending
/// for it (a clean stop: at once). Until then a replacement under the same name may return.
pub const FORGET_AFTER: Duration = Duration::from_secs(60);

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// This many jobs were applied and acked.
    Processed(usize),
    /// Nothing to do.
    Idle,
}

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub consumer: String,
    pub batch_size: usize,
    /// Pending jobs idle this long are taken over from their (presumably dead) consumer.
    pub claim_idle: Duration,
    /// How long one read waits for new jobs.
    pub block: Duration,
    /// Called between a batch's commit and its ack. Only fault-injection tests set it (to stop
    /// the process exactly there); `None` in production.
    pub after_commit: Option<fn()>,
    /// Called between publishing awards and marking them delivered; likewise only for tests.
    pub after_award_publish: Option<fn()>,
}

pub struct Worker {
    broker: Arc<dyn Broker>,
    store: Store,
    settings: WorkerSettings,
    /// Scores activities: the rules, and awards as notifications.
    gamification: Gamification,
    /// When pending jobs were last looked for; claiming is a separate round trip, so it runs
    /// every `claim_idle / 2`, not on every batch.
    last_claim: Option<Instant>,
    /// A batch read but not applied (its step failed): the next step tries it again first.
    in_hand: Vec<JobEntry>,
    /// Workers whose heartbeat ran out, with how long ago, as the last beat found them
    /// (`run`'s beat task writes, the next step takes); `dead_found` wakes a step waiting for
    /// jobs.
    dead: Arc<std::sync::Mutex<Vec<(String, Duration)>>>,
    dead_found: Arc<tokio::sync::Notify>,
    metrics: Arc<metrics::WorkerMetrics>,
}

impl Worker {
    pub fn new(broker: Arc<dyn Broker>, store: Store, settings: WorkerSettings, rules: Rules) -> Self {
        Self {
            broker,
            store,
            settings,
            gamification: Gamification { rules },
            last_claim: None,
            in_hand: Vec::new(),
            dead: Arc::default(),
            dead_found: Arc::default(),
            metrics: Arc::default(),
        }
    }

    /// What this worker counts (served at `/metrics` by the worker process).
    pub fn metrics(&self) -> Arc<metrics::WorkerMetrics> {
        self.metrics.clone()
    }

    /// Publishes award notifications that were stored but not yet delivered (after a commit, or
    /// left by a worker that died before marking them). Each is claimed in the database for
    /// `claim_idle` (two live workers never publish the same one), published, and only then
    /// marked delivered: a crash in between publishes it again later, with the same
    /// `notification_id`, so a client can tell a repeat from a new award.
    pub async fn deliver_awards(&self) -> Result<usize, WorkerError> {
        let mut delivered = 0;
        loop {
            let claimed = self.store.claim_undelivered(256, self.settings.claim_idle).await?;
            if claimed.is_empty() {
                return Ok(delivered);
            }
            // One publish call for the lot: one script on one Redis, one per slot on a cluster.
            // Traced, each award's envelope carries the call's trace to the nodes that deliver it.
            let span = match claimed.first() {
                Some(n) => shared::telemetry::root_publish_span(&Group::user(&n.user_id), claimed.len()),
                None => tracing::Span::none(),
            };
            let traceparent = shared::telemetry::traceparent(&span);
            let publications: Vec<_> = claimed
                .iter()
                .map(|n| {
                    let mut envelope = Envelope::to_all(Event::Notification(n.clone()));
                    envelope.traceparent = traceparent.clone();
                    (Group::user(&n.user_id), envelope.encode())
                })
                .collect();
            let ids: Vec<i64> = claimed.iter().map(|n| n.notification_id).collect();
            let published = {
                use tracing::Instrument;
                self.broker.publish_all(&publications, &[]).instrument(span).await
            };
            if let Err(e) = published {
                // On a cluster some slots' steps may have gone out: published again later, with
                // the same `notification_id`.
                self.store.release_undelivered(&ids).await?;
                return Err(e.into());
            }
            if let Some(hook) = self.settings.after_award_publish {
                hook();
            }
            self.store.mark_delivered(&ids).await?;
            delivered += ids.len();
        }
    }

    pub async fn process_batch(&mut self) -> Result<Step, WorkerError> {
        // A batch whose step failed (the database or Redis away) is tried again first: left
        // pending, it would wait `claim_idle` for XAUTOCLAIM, long after the outage.
        let mut entries = std::mem::take(&mut self.in_hand);
        if entries.is_empty() {
            entries = self.take_entries().await?;
        }
        if entries.is_empty() {
            return Ok(Step::Idle);
        }
        let count = entries.len();
        // Counted as persisted when the batch is (a dead-lettered job among them is counted
        // in `worker_dead_letters_total` too).
        let ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
        if let Err((e, left)) = self.apply(entries).await {
            self.in_hand = left;
            return Err(e);
        }
        self.metrics.persisted(ids.iter().map(String::as_str));
        self.deliver_awards().await?;
        Ok(Step::Processed(count))
    }

    /// What a dead consumer left pending (a worker whose heartbeat ran out at once, any
    /// consumer's jobs idle for `claim_idle` every `claim_idle / 2`), else new jobs.
    async fn take_entries(&mut self) -> Result<Vec<JobEntry>, WorkerError> {
        let claimed = self.take_from_dead().await?;
        if !claimed.is_empty() {
            return Ok(claimed);
        }
        let s = &self.settings;
        let claim_due = self.last_claim.is_none_or(|at| at.elapsed() >= s.claim_idle / 2);
        if claim_due {
            let claimed = self.broker.claim_stale_jobs(&s.consumer, s.claim_idle, s.batch_size).await?;
            self.last_claim = Some(Instant::now());
            // Awards a dead worker claimed but never marked delivered, whose claim ran out: they
            // must not wait for the next job to come along.
            self.deliver_awards().await?;
            if !claimed.is_empty() {
                tracing::info!(count = claimed.len(), "claimed jobs left pending by another consumer");
                return Ok(claimed);
            }
        }
        // A beat that finds a dead worker cuts the wait short (the read is cancel-safe: what
        // it had not returned stays for the next read).
        let read = self.broker.read_jobs(&self.settings.consumer, self.settings.batch_size, self.settings.block);
        tokio::select! {
            read = read => Ok(read?),
            _ = self.dead_found.notified() => Ok(Vec::new()),
        }
    }

    /// Takes the jobs pending for the workers the last beat found dead, and removes those dead
    /// for `FORGET_AFTER` from the group.
    async fn take_from_dead(&mut self) -> Result<Vec<JobEntry>, WorkerError> {
        let found = std::mem::take(&mut *self.dead.lock().expect("dead workers lock"));
        let me = &self.settings.consumer;
        let dead: Vec<String> = found.iter().filter(|(name, _)| name != me).map(|(name, _)| name.clone()).collect();
        if dead.is_empty() {
            return Ok(Vec::new());
        }
        let forget: Vec<String> =
            found.iter().filter(|(name, since)| name != me && *since >= FORGET_AFTER).map(|(n, _)| n.clone()).collect();
        let claimed = self.broker.claim_jobs_of(me, &dead, &forget, self.settings.batch_size).await?;
        if !claimed.is_empty() {
            tracing::info!(count = claimed.len(), dead = ?dead, "took over the jobs of a worker whose heartbeat ran out");
        }
        Ok(claimed)
    }

    /// Applies a batch and acks it. On failure, returns the entries still to apply (the
    /// undecodable ones are already dead-lettered).
    async fn apply(&self, entries: Vec<JobEntry>) -> Result<(), (WorkerError, Vec<JobEntry>)> {
        let mut decoded = Vec::with_capacity(entries.len());
        let mut jobs = Vec::with_capacity(entries.len());
        let mut entries = entries.into_iter();
        while let Some(entry) = entries.next() {
            match StampedJob::decode(&entry.payload) {
                Ok(job) => {
                    jobs.push(job);
                    decoded.push(entry);
                }
                // It will never succeed: kept for an operator, out of everyone's way.
                Err(e) => {
                    if let Err(failed) = self.dead_letter(&entry, &format!("undecodable job: {e}")).await {
                        decoded.push(entry);
                        decoded.extend(entries);
                        return Err((failed, decoded));
                    }
                }
            }
        }
        let (batch, messages) = traced_batch(&jobs);
        let persisted = {
            use tracing::Instrument;
            self.persist_around_refusals(&decoded, &jobs).instrument(batch).await
        };
        // Each sampled message's `persist` span ends with its batch's transaction.
        drop(messages);
        let dead = match persisted {
            Ok(dead) => dead,
            Err(e) => return Err((e, decoded)),
        };
        if let Some(hook) = self.settings.after_commit {
            hook();
        }
        let ids: Vec<String> = decoded.iter().map(|e| e.id.clone()).filter(|id| !dead.contains(id)).collect();
        if let Err(e) = self.broker.ack_jobs(&ids).await {
            let left = decoded.into_iter().filter(|e| !dead.contains(&e.id)).collect();
            return Err((e.into(), left));
        }
        Ok(())
    }

    /// Persists `jobs` (read as `entries`, in the same order). When the database refuses a part
    /// for its data, that part is split in halves and each is tried again, until the refused job
    /// is alone: it is dead-lettered, everything else is persisted. A refusal costs about
    /// 2·log2(batch) extra transactions. Returns the ids of the dead-lettered entries.
    async fn persist_around_refusals(
        &self,
        entries: &[JobEntry],
        jobs: &[StampedJob],
    ) -> Result<Vec<String>, WorkerError> {
        let mut dead = Vec::new();
        // Ranges still to persist; popped from the end, so pushed last-half first to keep order.
        let mut todo = Vec::with_capacity(16);
        todo.push(0..jobs.len());
        while let Some(range) = todo.pop() {
            if range.is_empty() {
                continue;
            }
            match self.store.persist(&jobs[range.clone()], &self.gamification).await {
                Ok(()) => {}
                Err(e) if e.is_refused_data() => {
                    if range.len() == 1 {
                        let entry = &entries[range.start];
                        let error = match e.code() {
                            Some(code) => format!("{e} (SQLSTATE {code})"),
                            None => e.to_string(),
                        };
                        self.dead_letter(entry, &error).await?;
                        dead.push(entry.id.clone());
                    } else {
                        let middle = range.start + range.len() / 2;
                        todo.push(middle..range.end);
                        todo.push(range.start..middle);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(dead)
    }

    async fn dead_letter(&self, entry: &JobEntry, error: &str) -> Result<(), WorkerError> {
        tracing::error!(id = %entry.id, error, "job moved to the dead-letter stream");
        self.broker.dead_letter(entry, error).await?;
        self.metrics.dead_letters.inc();
        Ok(())
    }

    /// Steps until `shutdown`; a failed step (Redis or database away) is retried after a pause.
    /// The batch in hand is finished before stopping.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let me = self.settings.consumer.clone();
        // Heard of before the first read, so that no one takes this worker for dead.
        if let Err(e) = self.broker.worker_beat(&me, BEAT_EXPIRY).await {
            tracing::warn!(error = %e, "first heartbeat failed; the beat task will retry");
        }
        // Jobs pending under this name from an earlier life (a fixed `WORKER_CONSUMER`
        // restarted): a new read would never hand them out again.
        match self.broker.claim_jobs_of(&me, std::slice::from_ref(&me), &[], self.settings.batch_size).await {
            Ok(earlier) => self.in_hand = earlier,
            Err(e) => {
                tracing::warn!(error = %e, "reading this consumer's earlier jobs failed; the idle-time claim will")
            }
        }
        let beat = tokio::spawn(beat(self.broker.clone(), me.clone(), self.dead.clone(), self.dead_found.clone()));
        let mut failures: u32 = 0;
        while !shutdown.is_cancelled() {
            match self.process_batch().await {
                Ok(_) => failures = 0,
                Err(e) => {
                    self.metrics.step_failures.inc();
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %e, "worker step failed; retrying");
                    let pause = Duration::from_millis(100 * u64::from(failures.min(5)));
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
        beat.abort();
        // A clean stop: what this worker read ahead and did not apply is free for the others at
        // once.
        if let Err(e) = self.broker.worker_beat(&me, Duration::ZERO).await {
            tracing::warn!(error = %e, "could not say this worker stopped; the others will see its heartbeat run out");
        }
        tracing::info!("worker stopped");
    }
}

/// The spans of one batch's transaction (tracing on): the batch's own, linked to the trace of
/// each sampled message in it, and one `persist` span in each such message's trace, so that a
/// message's trace shows when its row was written.
fn traced_batch(jobs: &[StampedJob]) -> (tracing::Span, Vec<tracing::Span>) {
    if !shared::telemetry::enabled() || jobs.iter().all(|job| job.traceparent.is_none()) {
        return (tracing::Span::none(), Vec::new());
    }
    let batch = tracing::info_span!(
        "persist batch",
        "otel.kind" = "consumer",
        "messaging.system" = "redis",
        "messaging.operation.type" = "process",
        "messaging.batch.message_count" = jobs.len(),
        "db.system.name" = "postgresql",
        trace_id = tracing::field::Empty,
    );
    let mut messages = Vec::new();
    for traceparent in jobs.iter().filter_map(|job| job.traceparent.as_deref()) {
        shared::telemetry::link(&batch, traceparent);
        let message = tracing::info_span!(
            parent: None,
            "persist",
            "otel.kind" = "consumer",
            "messaging.system" = "redis",
            "messaging.operation.type" = "process",
            "db.system.name" = "postgresql",
            trace_id = tracing::field::Empty,
        );
        shared::telemetry::follow(&message, traceparent);
        messages.push(message);
    }
    (batch, messages)
}

/// Says every `BEAT` that `me` is alive, and hands the workers found dead to the steps.
async fn beat(
    broker: Arc<dyn Broker>,
    me: String,
    dead: Arc<std::sync::Mutex<Vec<(String, Duration)>>>,
    dead_found: Arc<tokio::sync::Notify>,
) {
    let mut every = tokio::time::interval(BEAT);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        match broker.worker_beat(&me, BEAT_EXPIRY).await {
            Ok(found) => {
                let others = found.iter().any(|(name, _)| *name != me);
                *dead.lock().expect("dead workers lock") = found;
                if others {
                    dead_found.notify_one();
                }
            }
            Err(e) => tracing::warn!(error = %e, "worker heartbeat failed; retrying"),
        }
    }
}

#[derive(clap::Parser)]
#[command(
    name = "worker",
    version,
    about = "Persists what the gateway nodes accepted, exactly once, and emits gamification events."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Consume the jobs stream (the default); stops on SIGTERM or Ctrl-C.
    Run,
    /// List the dead letters (id, job id, error, job), or put one back on the jobs stream.
    DeadLetters {
        /// The dead letter to replay (after its cause was fixed).
        #[arg(long, value_name = "ID")]
        replay: Option<String>,
    },
    /// Check the settings in the environment; exits non-zero naming what is missing or wrong.
    CheckConfig,
}

/// The worker process: `REDIS_URL` and `DATABASE_URL` required. `--help` lists every setting.
pub async fn main_from_env() -> anyhow::Result<()> {
    use clap::{CommandFactory, FromArgMatches};
    let help = shared::config::settings_help(shared::config::ReadBy::Worker);
    let matches = Cli::command().after_help(help).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => main_with_hooks(Hooks::default()).await,
        Command::DeadLetters { replay } => dead_letters_command(replay.as_deref()).await,
        Command::CheckConfig => {
            let config = shared::config::WorkerConfig::from_env()?;
            println!(
                "configuration OK: Redis {}, replica acks {}, consumer {}, batches of {}",
                config.redis.describe(),
                config.replica_acks,
                config.consumer,
                config.batch_size
            );
            println!("{}", shared::persistence::check(&config.redis).await.note());
            Ok(())
        }
    }
}

/// Lists the dead letters (one line each: id, the job's stream id, the error, the job), or
/// replays one. Only Redis is needed.
async fn dead_letters_command(replay: Option<&str>) -> anyhow::Result<()> {
    let config = shared::config::WorkerConfig::from_env()?;
    let broker = shared::broker::RedisBroker::new(&config.redis, &config.redis_prefix)?
        .with_window(config.window)
        .with_replica_acks(config.replica_acks);
    match replay {
        Some(id) => {
            anyhow::ensure!(broker.replay_dead_letter(id).await?, "no dead letter {id}");
            println!("replayed {id}");
        }
        None => {
            for letter in broker.dead_letters(10_000).await? {
                let job = String::from_utf8_lossy(&letter.payload);
                println!("{}\t{}\t{}\t{}", letter.id, letter.job_id, letter.error, job);
            }
        }
    }
    Ok(())
}

/// Where a fault-injection test stops a worker process (see `WorkerSettings`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Hooks {
    pub after_commit: Option<fn()>,
    pub after_award_publish: Option<fn()>,
}

/// `main_from_env` with fault-injection hooks (tests).
pub async fn main_with_hooks(hooks: Hooks) -> anyhow::Result<()> {
    let config = shared::config::WorkerConfig::from_env()?;
    let store = Store::connect(&config.database_url, 8).await?;
    let broker = shared::broker::RedisBroker::new(&config.redis, &config.redis_prefix)?
        .with_window(config.window)
        .with_replica_acks(config.replica_acks);
    let rules = Rules::load(config.rules_path.as_deref())?;
    let settings = WorkerSettings {
        consumer: config.consumer.clone(),
        batch_size: config.batch_size,
        claim_idle: config.claim_idle,
        block: Duration::from_secs(1),
        after_commit: hooks.after_commit,
        after_award_publish: hooks.after_award_publish,
    };
    tracing::info!(consumer = %settings.consumer, "worker started");
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        signal.cancel();
    });
    let worker = Worker::new(Arc::new(broker), store, settings, rules);
    let addr = metrics::serve(config.metrics_bind, worker.metrics(), shutdown.clone())
        .await
        .map_err(|e| anyhow::anyhow!("WORKER_METRICS_BIND={}: {e}", config.metrics_bind))?;
    tracing::info!(%addr, "worker metrics on /metrics, liveness on /healthz");
    let at_risk = shared::persistence::check_and_log(&config.redis).await.is_some();
    worker.metrics().redis_persistence_at_risk.set(i64::from(at_risk));
    // Awards a previous worker stored but did not get to publish.
    if let Err(e) = worker.deliver_awards().await {
        tracing::warn!(error = %e, "publishing pending awards failed; will retry after the next batch");
    }
    worker.run(shutdown).await;
    Ok(())
}

/// Resolves on SIGTERM (Kubernetes, docker stop) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
