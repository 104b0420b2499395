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
//! [`Worker::run`] calls it in a loop until shutdown; tests call it directly.

pub mod awards;
pub mod rules;

use std::sync::Arc;
use std::time::{Duration, Instant};

use shared::broker::{Broker, BrokerError};
use shared::event::{Envelope, Event, Group};
use shared::jobs::{Job, JobEntry};
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
}

impl Worker {
    pub fn new(broker: Arc<dyn Broker>, store: Store, settings: WorkerSettings, rules: Rules) -> Self {
        Self { broker, store, settings, gamification: Gamification { rules }, last_claim: None }
    }

    /// Publishes award notifications that were stored but not yet published (after a commit,
    /// or left by a worker that died between its commit and its publish). Each is claimed in the
    /// database first, so that two workers never publish the same one.
    pub async fn deliver_awards(&self) -> Result<usize, WorkerError> {
        let mut delivered = 0;
        loop {
            let claimed = self.store.claim_undelivered(256).await?;
            if claimed.is_empty() {
                return Ok(delivered);
            }
            for (i, notification) in claimed.iter().enumerate() {
                let group = Group::user(&notification.user_id);
                let envelope = Envelope::to_all(Event::Notification(notification.clone())).encode();
                if let Err(e) = self.broker.publish(&group, envelope).await {
                    let rest: Vec<i64> = claimed[i..].iter().map(|n| n.notification_id).collect();
                    self.store.release_undelivered(&rest).await?;
                    return Err(e.into());
                }
                delivered += 1;
            }
        }
    }

    pub async fn process_batch(&mut self) -> Result<Step, WorkerError> {
        let s = &self.settings;
        let mut entries: Vec<JobEntry> = Vec::new();
        let claim_due = self.last_claim.is_none_or(|at| at.elapsed() >= s.claim_idle / 2);
        if claim_due {
            entries = self.broker.claim_stale_jobs(&s.consumer, s.claim_idle, s.batch_size).await?;
            self.last_claim = Some(Instant::now());
            if !entries.is_empty() {
                tracing::info!(count = entries.len(), "claimed jobs left pending by another consumer");
            }
        }
        if entries.is_empty() {
            entries = self.broker.read_jobs(&s.consumer, s.batch_size, s.block).await?;
        }
        if entries.is_empty() {
            return Ok(Step::Idle);
        }
        let mut jobs = Vec::with_capacity(entries.len());
        for entry in &entries {
            match Job::decode(&entry.payload) {
                Ok(job) => jobs.push(job),
                // Acked below with the rest: a job that cannot be decoded will never succeed, and
                // redelivering it forever would stall nothing but fill the logs.
                Err(e) => tracing::error!(id = %entry.id, error = %e, "dropping undecodable job"),
            }
        }
        self.store.persist(&jobs, &self.gamification).await?;
        if let Some(hook) = self.settings.after_commit {
            hook();
        }
        let ids: Vec<String> = entries.into_iter().map(|e| e.id).collect();
        self.broker.ack_jobs(&ids).await?;
        self.deliver_awards().await?;
        Ok(Step::Processed(ids.len()))
    }

    /// Steps until `shutdown`; a failed step (Redis or database away) is retried after a pause.
    /// The batch in hand is finished before stopping.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut failures: u32 = 0;
        while !shutdown.is_cancelled() {
            match self.process_batch().await {
                Ok(_) => failures = 0,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %e, "worker step failed; retrying");
                    let pause = Duration::from_millis(100 * u64::from(failures.min(20)));
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
        tracing::info!("worker stopped");
    }
}

/// The worker process: `REDIS_URL` and `DATABASE_URL` required; stops on SIGTERM or Ctrl-C.
pub async fn main_from_env() -> anyhow::Result<()> {
    main_with_hook(None).await
}

/// `main_from_env` with a hook run between each commit and its ack (fault-injection tests).
pub async fn main_with_hook(after_commit: Option<fn()>) -> anyhow::Result<()> {
    let config = shared::config::WorkerConfig::from_env()?;
    let store = Store::connect(&config.database_url, 8).await?;
    let broker = shared::broker::RedisBroker::new(&config.redis_url, &config.redis_prefix)?;
    let rules = Rules::load(config.rules_path.as_deref())?;
    let settings = WorkerSettings {
        consumer: config.consumer.clone(),
        batch_size: config.batch_size,
        claim_idle: config.claim_idle,
        block: Duration::from_secs(1),
        after_commit,
    };
    tracing::info!(consumer = %settings.consumer, "worker started");
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        signal.cancel();
    });
    let worker = Worker::new(Arc::new(broker), store, settings, rules);
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

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
