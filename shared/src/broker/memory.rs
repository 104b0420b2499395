//! The in-process broker of embedded mode. A `MemoryBus` plays the part of the Redis server;
//! each `MemoryBroker` is one node attached to it (embedded mode has one; the contract tests
//! attach two to show the same node-level semantics as Redis).
//!
//! With a journal (`MemoryBus::durable`, what embedded mode uses), jobs are written to a table
//! of the SQLite file before their publications go out live, many callers' jobs in one
//! transaction (group commit), and deleted when acked; the table is read back at start. So a
//! SIGKILL loses nothing a client saw: the worker persists it after the restart.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use sqlx::SqlitePool;
use tokio::sync::{mpsc, oneshot, Notify};

use super::{BrokerError, GroupLog, Inbound, JobQueue, Once, PubSub, Publication, WindowRead, INBOX_CAPACITY};
use crate::config::GroupWindow;
use crate::event::{self, Group, Position, Stamp};
use crate::jobs::{DeadLetter, JobEntry};

#[derive(Clone)]
pub struct MemoryBus {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// Nodes and the jobs queue. Held only for short, non-async sections.
    state: Mutex<BusState>,
    /// Woken when a job is appended, so that a blocked `read_jobs` returns.
    job_added: Notify,
    /// The durable journal's writer and its table's pool; `None` keeps jobs in memory only.
    journal: Option<(mpsc::Sender<JournalWrite>, SqlitePool)>,
}

/// One `publish_all` waiting for its jobs to be written.
struct JournalWrite {
    publications: Vec<(Group, Bytes)>,
    jobs: Vec<Bytes>,
    done: oneshot::Sender<Result<(), BrokerError>>,
}

/// Most callers' writes committed in one transaction.
const GROUP_COMMIT: usize = 512;

#[derive(Default)]
struct BusState {
    /// The last epoch given to a group's counter: each new one is later, even within a microsecond.
    last_epoch: u64,
    window: GroupWindow,
    /// Each group's counter and window.
    logs: HashMap<Group, GroupRecord>,
    /// Publications since idle groups' logs were last dropped.
    since_sweep: usize,
    next_node: u64,
    nodes: Vec<NodeSlot>,
    next_job: u64,
    /// Jobs not yet delivered to any consumer, oldest first.
    fresh: VecDeque<(u64, Bytes)>,
    /// Delivered, not yet acked: job id → (payload, consumer, delivered at).
    pending: BTreeMap<u64, (Bytes, String, Instant)>,
    /// Jobs that could not be applied, oldest first.
    dead: Vec<DeadLetter>,
    /// Worker (consumer) → when its heartbeat runs out (`None`: it stopped cleanly).
    workers: HashMap<String, Option<Instant>>,
    /// Sends made once (`Broker::publish_once`): id → (first payload, forgotten at).
    sent: HashMap<String, (Bytes, Instant)>,
}

/// A group's counter and window (what Redis keeps in the counter hash and the window stream).
#[derive(Default)]
struct GroupRecord {
    /// When this counter was made (µs); a log dropped while idle comes back under a new one.
    epoch: u64,
    seq: u64,
    window: VecDeque<(u64, Bytes)>,
    last_publication: Option<Instant>,
}

/// Idle groups' logs are looked for once per this many publications.
const SWEEP_EVERY: usize = 4096;

fn bus_state(window: GroupWindow) -> BusState {
    BusState { window, ..BusState::default() }
}

struct NodeSlot {
    id: u64,
    groups: HashSet<Group>,
    inbox: mpsc::Sender<Inbound>,
}

impl MemoryBus {
    pub fn new(window: GroupWindow) -> Self {
        let shared = Shared { state: Mutex::new(bus_state(window)), ..Shared::default() };
        Self { shared: Arc::new(shared) }
    }

    /// A bus whose jobs live in the `embedded_jobs` table of `pool` until acked; the jobs a
    /// previous process left there are queued again.
    pub async fn durable(pool: SqlitePool, window: GroupWindow) -> Result<Self, BrokerError> {
        let left: Vec<(i64, Vec<u8>)> = sqlx::query_as("SELECT id, payload FROM embedded_jobs ORDER BY id")
            .fetch_all(&pool)
            .await
            .map_err(journal_error)?;
        if !left.is_empty() {
            tracing::info!(count = left.len(), "queued again: jobs accepted before the last stop");
        }
        let (tx, rx) = mpsc::channel(GROUP_COMMIT * 4);
        let fresh = left.into_iter().map(|(id, payload)| (id as u64, Bytes::from(payload))).collect();
        let state = BusState { fresh, ..bus_state(window) };
        let shared =
            Arc::new(Shared { state: Mutex::new(state), job_added: Notify::new(), journal: Some((tx, pool.clone())) });
        tokio::spawn(write_journal(Arc::downgrade(&shared), pool, rx));
        Ok(Self { shared })
    }

    /// Attaches a node: its broker handle and its inbox.
    pub fn node(&self) -> (MemoryBroker, mpsc::Receiver<Inbound>) {
        let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
        // A fresh node holds no subscriptions, as after a Redis (re)connect.
        let _ = tx.try_send(Inbound::Reconnected);
        let mut state = self.shared.state.lock().expect("bus lock");
        state.next_node += 1;
        let id = state.next_node;
        state.nodes.push(NodeSlot { id, groups: HashSet::new(), inbox: tx });
        (MemoryBroker { shared: self.shared.clone(), node: id }, rx)
    }
}

pub struct MemoryBroker {
    shared: Arc<Shared>,
    node: u64,
}

impl Drop for MemoryBroker {
    fn drop(&mut self) {
        if let Ok(mut state) = self.shared.state.lock() {
            state.nodes.retain(|n| n.id != self.node);
        }
    }
}

fn job_id(seq: u64) -> String {
    format!("{seq}-0")
}

fn parse_job_id(id: &str) -> Option<u64> {
    id.strip_suffix("-0")?.parse().ok()
}

fn journal_error(e: sqlx::Error) -> BrokerError {
    BrokerError::Journal(e.to_string())
}

/// The journal's writer: takes the waiting writes, commits their jobs in one transaction, then
/// queues the jobs and delivers the publications, in order, and answers each caller.
async fn write_journal(bus: std::sync::Weak<Shared>, pool: SqlitePool, mut writes: mpsc::Receiver<JournalWrite>) {
    while let Some(first) = writes.recv().await {
        let mut batch = vec![first];
        while batch.len() < GROUP_COMMIT {
            match writes.try_recv() {
                Ok(write) => batch.push(write),
                Err(_) => break,
            }
        }
        let written: Result<Vec<i64>, sqlx::Error> = async {
            let mut tx = pool.begin().await?;
            let mut ids = Vec::new();
            for job in batch.iter().flat_map(|w| &w.jobs) {
                let id: i64 = sqlx::query_scalar("INSERT INTO embedded_jobs (payload) VALUES ($1) RETURNING id")
                    .bind(job.as_ref())
                    .fetch_one(&mut *tx)
                    .await?;
                ids.push(id);
            }
            tx.commit().await?;
            Ok(ids)
        }
        .await;
        let Some(shared) = bus.upgrade() else { return };
        match written {
            Ok(ids) => {
                {
                    // The journal keeps the jobs unstamped: after a restart their counters are gone.
                    let state = &mut *shared.state.lock().expect("bus lock");
                    let mut ids = ids.into_iter();
                    for write in &batch {
                        let jobs =
                            write.jobs.iter().map(|job| (ids.next().expect("one id per job") as u64, job.clone()));
                        MemoryBroker::deliver_all(state, &write.publications, jobs);
                    }
                }
                shared.job_added.notify_one();
                for write in batch {
                    let _ = write.done.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "journal write failed; the callers are told unavailable");
                for write in batch {
                    let _ = write.done.send(Err(BrokerError::Journal(e.to_string())));
                }
            }
        }
    }
}

impl MemoryBroker {
    /// Deletes acked (or dead-lettered) jobs from the journal, if there is one.
    async fn forget(&self, seqs: &[u64]) -> Result<(), BrokerError> {
        let Some((_, pool)) = &self.shared.journal else { return Ok(()) };
        let mut tx = pool.begin().await.map_err(journal_error)?;
        for seq in seqs {
            sqlx::query("DELETE FROM embedded_jobs WHERE id = $1")
                .bind(*seq as i64)
                .execute(&mut *tx)
                .await
                .map_err(journal_error)?;
        }
        tx.commit().await.map_err(journal_error)
    }

    /// Numbers the publication, keeps it in the group's window, and hands it to every node
    /// subscribed to the group. Returns its stamp: its position and when it was published.
    fn deliver(state: &mut BusState, group: &Group, payload: &Bytes) -> (Position, u64) {
        let now = Instant::now();
        state.since_sweep += 1;
        if state.since_sweep >= SWEEP_EVERY {
            state.since_sweep = 0;
            let ttl = state.window.ttl;
            state.logs.retain(|_, log| log.last_publication.is_some_and(|t| now - t < ttl));
        }
        let last_epoch = &mut state.last_epoch;
        let log = state.logs.entry(group.clone()).or_insert_with(|| {
            let epoch = (chrono::Utc::now().timestamp_micros().max(1) as u64).max(*last_epoch + 1);
            *last_epoch = epoch;
            GroupRecord { epoch, seq: Position::counter_start(epoch), window: VecDeque::new(), last_publication: None }
        });
        log.seq += 1;
        log.last_publication = Some(now);
        let at_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
        let position = Position { epoch: log.epoch, seq: log.seq };
        let stamped = event::stamp(position, at_ms, payload);
        // The stamp beside the bytes, known here rather than read back from them; none when
        // `stamp` left the payload as it was (not a JSON object).
        let stamp = (stamped.len() != payload.len()).then_some(Stamp { position, at: at_ms });
        let payload = stamped;
        if state.window.len > 0 {
            if log.window.len() == state.window.len {
                log.window.pop_front();
            }
            log.window.push_back((log.seq, payload.clone()));
        }
        for node in state.nodes.iter().filter(|n| n.groups.contains(group)) {
            let publication = Publication { stamp, payload: payload.clone() };
            let message = Inbound::Message { group: group.clone(), publication };
            if node.inbox.try_send(message).is_err() {
                // Same contract as Redis's pub/sub output limit: a node that cannot keep up loses
                // live publications (the durable copy is in the jobs stream).
                tracing::warn!(group = %group, "memory broker: node inbox full, publication dropped");
            }
        }
        (position, at_ms)
    }

    /// Delivers `publications` and queues `jobs` (their ids given), each job stamped with the first
    /// publication's position (`jobs::stamp`), as the Redis publish script does.
    fn deliver_all(
        state: &mut BusState,
        publications: &[(Group, Bytes)],
        jobs: impl IntoIterator<Item = (u64, Bytes)>,
    ) {
        let mut first = None;
        for (group, payload) in publications {
            let (position, _) = Self::deliver(state, group, payload);
            first.get_or_insert(position);
        }
        for (id, job) in jobs {
            let job = match first {
                Some(position) => crate::jobs::stamp(position, &job),
                None => job,
            };
            state.fresh.push_back((id, job));
        }
    }

    fn with_node(&self, f: impl FnOnce(&mut NodeSlot)) {
        let mut state = self.shared.state.lock().expect("bus lock");
        if let Some(node) = state.nodes.iter_mut().find(|n| n.id == self.node) {
            f(node);
        }
    }

    fn take_fresh(&self, consumer: &str, max: usize) -> Vec<JobEntry> {
        let mut state = self.shared.state.lock().expect("bus lock");
        let mut taken = Vec::new();
        while taken.len() < max {
            let Some((seq, payload)) = state.fresh.pop_front() else { break };
            state.pending.insert(seq, (payload.clone(), consumer.to_owned(), Instant::now()));
            taken.push(JobEntry { id: job_id(seq), payload });
        }
        taken
    }
}

#[async_trait]
impl PubSub for MemoryBroker {
    async fn publish(&self, group: &Group, payload: Bytes) -> Result<(), BrokerError> {
        let state = &mut *self.shared.state.lock().expect("bus lock");
        Self::deliver(state, group, &payload);
        Ok(())
    }

    async fn publish_all(&self, publications: &[(Group, Bytes)], jobs: &[Bytes]) -> Result<(), BrokerError> {
        if let (Some((journal, _)), false) = (&self.shared.journal, jobs.is_empty()) {
            // Durable first, live second: what a client sees is already in the journal.
            let (done, written) = oneshot::channel();
            let write = JournalWrite { publications: publications.to_vec(), jobs: jobs.to_vec(), done };
            journal.send(write).await.map_err(|_| BrokerError::Disconnected)?;
            return written.await.map_err(|_| BrokerError::Disconnected)?;
        }
        {
            let state = &mut *self.shared.state.lock().expect("bus lock");
            let first_id = state.next_job + 1;
            state.next_job += jobs.len() as u64;
            let ids = (first_id..).zip(jobs.iter().cloned());
            Self::deliver_all(state, publications, ids);
        }
        if !jobs.is_empty() {
            self.shared.job_added.notify_one();
        }
        Ok(())
    }

    async fn publish_once(
        &self,
        once: &Once,
        group: &Group,
        payload: Bytes,
        job: Bytes,
    ) -> Result<Option<Bytes>, BrokerError> {
        {
            // Claimed before publishing, so that a racing resend sees it; given back on failure.
            let mut state = self.shared.state.lock().expect("bus lock");
            let now = Instant::now();
            state.sent.retain(|_, (_, until)| *until > now);
            if let Some((first, _)) = state.sent.get(&once.id) {
                return Ok(Some(first.clone()));
            }
            state.sent.insert(once.id.clone(), (payload.clone(), now + once.ttl));
        }
        let published = self.publish_all(&[(group.clone(), payload)], &[job]).await;
        if published.is_err() {
            self.shared.state.lock().expect("bus lock").sent.remove(&once.id);
        }
        published.map(|()| None)
    }

    async fn subscribe(&self, groups: &[Group]) -> Result<(), BrokerError> {
        self.with_node(|node| node.groups.extend(groups.iter().cloned()));
        Ok(())
    }

    async fn unsubscribe(&self, groups: &[Group]) -> Result<(), BrokerError> {
        self.with_node(|node| {
            for g in groups {
                node.groups.remove(g);
            }
        });
        Ok(())
    }

    async fn ping(&self) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn reconnect_subscriber(&self) -> Result<(), BrokerError> {
        // In one process nothing can stall silently between the publisher and the inbox.
        Ok(())
    }
}

#[async_trait]
impl GroupLog for MemoryBroker {
    async fn positions(&self, groups: &[Group]) -> Result<Vec<Position>, BrokerError> {
        let state = self.shared.state.lock().expect("bus lock");
        Ok(groups
            .iter()
            .map(|group| match state.logs.get(group) {
                Some(log) => Position { epoch: log.epoch, seq: log.seq },
                None => Position::default(),
            })
            .collect())
    }

    async fn window_since(&self, reads: &[(Group, Position)]) -> Result<Vec<WindowRead>, BrokerError> {
        let state = self.shared.state.lock().expect("bus lock");
        Ok(reads
            .iter()
            .map(|(group, after)| {
                let Some(log) = state.logs.get(group) else {
                    return WindowRead::assemble(*after, Position::default(), Vec::new());
                };
                let current = Position { epoch: log.epoch, seq: log.seq };
                let from = if after.epoch == log.epoch { after.seq } else { 0 };
                let entries = log.window.iter().filter(|(seq, _)| *seq > from).cloned().collect();
                WindowRead::assemble(*after, current, entries)
            })
            .collect())
    }
}

#[async_trait]
impl JobQueue for MemoryBroker {
    async fn enqueue(&self, job: Bytes) -> Result<(), BrokerError> {
        self.publish_all(&[], &[job]).await
    }

    async fn read_jobs(&self, consumer: &str, max: usize, block: Duration) -> Result<Vec<JobEntry>, BrokerError> {
        let taken = self.take_fresh(consumer, max);
        if !taken.is_empty() {
            return Ok(taken);
        }
        // A permit stored by `notify_one` makes this return at once if a job came in meanwhile.
        let _ = tokio::time::timeout(block, self.shared.job_added.notified()).await;
        Ok(self.take_fresh(consumer, max))
    }

    async fn claim_stale_jobs(
        &self,
        consumer: &str,
        min_idle: Duration,
        max: usize,
    ) -> Result<Vec<JobEntry>, BrokerError> {
        let mut state = self.shared.state.lock().expect("bus lock");
        let now = Instant::now();
        let mut claimed = Vec::new();
        for (seq, (payload, owner, delivered)) in state.pending.iter_mut() {
            if claimed.len() >= max {
                break;
            }
            if now.duration_since(*delivered) >= min_idle {
                *owner = consumer.to_owned();
                *delivered = now;
                claimed.push(JobEntry { id: job_id(*seq), payload: payload.clone() });
            }
        }
        Ok(claimed)
    }

    async fn worker_beat(&self, consumer: &str, expiry: Duration) -> Result<Vec<(String, Duration)>, BrokerError> {
        let mut state = self.shared.state.lock().expect("bus lock");
        let now = Instant::now();
        state.workers.insert(consumer.to_owned(), (!expiry.is_zero()).then(|| now + expiry));
        // A clean stop reads as expired long ago.
        let since = |at: &Option<Instant>| at.map_or(Duration::MAX, |at| now.saturating_duration_since(at));
        Ok(state
            .workers
            .iter()
            .filter(|(_, at)| at.is_none_or(|at| at < now))
            .map(|(name, at)| (name.clone(), since(at)))
            .collect())
    }

    async fn claim_jobs_of(
        &self,
        consumer: &str,
        dead: &[String],
        forget: &[String],
        max: usize,
    ) -> Result<Vec<JobEntry>, BrokerError> {
        let mut state = self.shared.state.lock().expect("bus lock");
        let now = Instant::now();
        let mut claimed = Vec::new();
        for name in dead {
            let theirs = state.pending.iter_mut().filter(|(_, (_, owner, _))| owner == name).take(max);
            for (seq, (payload, owner, delivered)) in theirs {
                *owner = consumer.to_owned();
                *delivered = now;
                claimed.push(JobEntry { id: job_id(*seq), payload: payload.clone() });
            }
        }
        for name in forget {
            if !state.pending.values().any(|(_, owner, _)| owner == name) {
                state.workers.remove(name);
            }
        }
        Ok(claimed)
    }

    async fn ack_jobs(&self, ids: &[String]) -> Result<(), BrokerError> {
        let seqs: Vec<u64> = ids.iter().filter_map(|id| parse_job_id(id)).collect();
        self.forget(&seqs).await?;
        let mut state = self.shared.state.lock().expect("bus lock");
        for seq in seqs {
            state.pending.remove(&seq);
        }
        Ok(())
    }

    async fn dead_letter(&self, entry: &JobEntry, error: &str) -> Result<(), BrokerError> {
        // Embedded mode keeps its dead letters in memory: they are listed in the log and
        // `/metrics`, and gone with a restart (the journal no longer holds them either).
        self.forget(&parse_job_id(&entry.id).into_iter().collect::<Vec<_>>()).await?;
        let mut state = self.shared.state.lock().expect("bus lock");
        if let Some(seq) = parse_job_id(&entry.id) {
            state.pending.remove(&seq);
        }
        state.next_job += 1;
        let id = job_id(state.next_job);
        let letter =
            DeadLetter { id, job_id: entry.id.clone(), payload: entry.payload.clone(), error: error.to_owned() };
        state.dead.push(letter);
        Ok(())
    }

    async fn dead_letter_count(&self) -> Result<u64, BrokerError> {
        Ok(self.shared.state.lock().expect("bus lock").dead.len() as u64)
    }

    async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, BrokerError> {
        let state = self.shared.state.lock().expect("bus lock");
        Ok(state.dead.iter().take(max).cloned().collect())
    }

    async fn replay_dead_letter(&self, id: &str) -> Result<bool, BrokerError> {
        let Some(letter) = ({
            let mut state = self.shared.state.lock().expect("bus lock");
            let found = state.dead.iter().position(|d| d.id == id);
            found.map(|i| state.dead.remove(i))
        }) else {
            return Ok(false);
        };
        self.enqueue(letter.payload).await?;
        Ok(true)
    }
}
