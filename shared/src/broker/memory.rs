//! The in-process broker of embedded mode. A `MemoryBus` plays the part of the Redis server;
//! each `MemoryBroker` is one node attached to it (embedded mode has one; the contract tests
//! attach two to show the same node-level semantics as Redis).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{mpsc, Notify};

use super::{Broker, BrokerError, Inbound, INBOX_CAPACITY};
use crate::event::Group;
use crate::jobs::{DeadLetter, JobEntry};

#[derive(Clone, Default)]
pub struct MemoryBus {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// Nodes and the jobs queue. Held only for short, non-async sections.
    state: Mutex<BusState>,
    /// Woken when a job is appended, so that a blocked `read_jobs` returns.
    job_added: Notify,
}

#[derive(Default)]
struct BusState {
    next_node: u64,
    nodes: Vec<NodeSlot>,
    next_job: u64,
    /// Jobs not yet delivered to any consumer, oldest first.
    fresh: VecDeque<(u64, Bytes)>,
    /// Delivered, not yet acked: job id → (payload, consumer, delivered at).
    pending: BTreeMap<u64, (Bytes, String, Instant)>,
    /// Jobs that could not be applied, oldest first.
    dead: Vec<DeadLetter>,
}

struct NodeSlot {
    id: u64,
    groups: HashSet<Group>,
    inbox: mpsc::Sender<Inbound>,
}

impl MemoryBus {
    pub fn new() -> Self {
        Self::default()
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

impl MemoryBroker {
    fn deliver(state: &BusState, group: &Group, payload: &Bytes) {
        for node in state.nodes.iter().filter(|n| n.groups.contains(group)) {
            let message = Inbound::Message { group: group.clone(), payload: payload.clone() };
            if node.inbox.try_send(message).is_err() {
                // Same contract as Redis's pub/sub output limit: a node that cannot keep up loses
                // live publications (the durable copy is in the jobs stream).
                tracing::warn!(group = %group, "memory broker: node inbox full, publication dropped");
            }
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
impl Broker for MemoryBroker {
    async fn publish(&self, group: &Group, payload: Bytes) -> Result<(), BrokerError> {
        let state = self.shared.state.lock().expect("bus lock");
        Self::deliver(&state, group, &payload);
        Ok(())
    }

    async fn publish_all(&self, publications: &[(Group, Bytes)], jobs: &[Bytes]) -> Result<(), BrokerError> {
        {
            let mut state = self.shared.state.lock().expect("bus lock");
            for (group, payload) in publications {
                Self::deliver(&state, group, payload);
            }
            for job in jobs {
                state.next_job += 1;
                let seq = state.next_job;
                state.fresh.push_back((seq, job.clone()));
            }
        }
        if !jobs.is_empty() {
            self.shared.job_added.notify_one();
        }
        Ok(())
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

    async fn ack_jobs(&self, ids: &[String]) -> Result<(), BrokerError> {
        let mut state = self.shared.state.lock().expect("bus lock");
        for seq in ids.iter().filter_map(|id| parse_job_id(id)) {
            state.pending.remove(&seq);
        }
        Ok(())
    }

    async fn dead_letter(&self, entry: &JobEntry, error: &str) -> Result<(), BrokerError> {
        let mut state = self.shared.state.lock().expect("bus lock");
        if let Some(seq) = parse_job_id(&entry.id) {
            state.pending.remove(&seq);
        }
        state.next_job += 1;
        let id = job_id(state.next_job);
        let letter = DeadLetter { id, job_id: entry.id.clone(), payload: entry.payload.clone(), error: error.to_owned() };
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

    async fn ping(&self) -> Result<(), BrokerError> {
        Ok(())
    }

    async fn reconnect_subscriber(&self) -> Result<(), BrokerError> {
        // In one process nothing can stall silently between the publisher and the inbox.
        Ok(())
    }
}
