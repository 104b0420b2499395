//! The contracts every broker implementation passes, one suite per trait (`pubsub`, `group_log`,
//! `jobs`). Run by `memory`'s unit tests and, against a
//! real Redis server, by the end-to-end suite. Each case gets a fresh bus (a new memory bus, or a
//! new key prefix on Redis) from the factory.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::{Broker, Inbound};
use crate::event::{Envelope, Event, Group, Position};

pub mod group_log;
pub mod jobs;
pub mod pubsub;

/// Makes nodes attached to one shared bus.
#[async_trait]
pub trait NodeFactory: Send + Sync {
    async fn node(&self) -> (Arc<dyn Broker>, mpsc::Receiver<Inbound>);
}

/// Guards against a hang, not a timing assertion: a case that waits this long has failed.
pub(super) const HANG_GUARD: Duration = Duration::from_secs(10);

pub(super) async fn next_message(inbox: &mut mpsc::Receiver<Inbound>) -> (Group, Bytes) {
    loop {
        let inbound = tokio::time::timeout(HANG_GUARD, inbox.recv())
            .await
            .expect("no publication arrived")
            .expect("inbox closed");
        if let Inbound::Message { group, publication } = inbound {
            // The stamp handed beside the bytes is the one they carry (none on a payload that is
            // not an envelope).
            let envelope = Envelope::decode(&publication.payload).ok();
            let carried = envelope.as_ref().and_then(|e| Some((e.position()?, e.at?)));
            assert_eq!(publication.stamp.map(|s| (s.position, s.at)), carried, "stamp beside the bytes");
            return (group, publication.payload);
        }
    }
}

pub(super) fn group(name: &str) -> Group {
    Group::from_name(name)
}

/// Runs every suite, each case on a fresh bus from `make`.
pub async fn run_all<F: NodeFactory>(make: impl Fn() -> F) {
    pubsub::run_all(&make).await;
    group_log::run_all(&make).await;
    jobs::run_all(&make).await;
}

pub(super) fn raw(n: u64) -> Bytes {
    Envelope::to_all(Event::Raw { event: serde_json::json!({ "n": n }) }).encode()
}

pub(super) fn decoded(payload: &Bytes) -> (Position, u64) {
    let envelope = Envelope::decode(payload).expect("a stamped envelope is still an envelope");
    let Event::Raw { event } = &envelope.event else { panic!("not the raw event published") };
    (envelope.position().expect("stamped"), event["n"].as_u64().unwrap())
}

#[cfg(test)]
mod memory_contract {
    use super::*;
    use crate::broker::MemoryBus;
    use crate::config::GroupWindow;

    struct Memory(MemoryBus);

    #[async_trait]
    impl NodeFactory for Memory {
        async fn node(&self) -> (Arc<dyn Broker>, mpsc::Receiver<Inbound>) {
            let (broker, inbox) = self.0.node();
            (Arc::new(broker), inbox)
        }
    }

    fn memory() -> Memory {
        Memory(MemoryBus::new(GroupWindow::default()))
    }

    #[tokio::test]
    async fn memory_broker_passes_the_pubsub_contract() {
        pubsub::run_all(&memory).await;
    }

    #[tokio::test]
    async fn memory_broker_passes_the_group_log_contract() {
        group_log::run_all(&memory).await;
    }

    #[tokio::test]
    async fn memory_broker_passes_the_job_queue_contract() {
        jobs::run_all(&memory).await;
    }

    /// Embedded mode's bus: jobs journaled in a SQLite file (a fresh one per case).
    struct Durable(tokio::sync::OnceCell<MemoryBus>, std::path::PathBuf);

    #[async_trait]
    impl NodeFactory for Durable {
        async fn node(&self) -> (Arc<dyn Broker>, mpsc::Receiver<Inbound>) {
            let bus = self
                .0
                .get_or_init(|| async {
                    let url = format!("sqlite://{}", self.1.join("journal.db").display());
                    let crate::store::Store::Sqlite(pool) = crate::store::Store::connect(&url, 2).await.unwrap() else {
                        unreachable!("a sqlite:// url")
                    };
                    MemoryBus::durable(pool, GroupWindow::default()).await.unwrap()
                })
                .await;
            let (broker, inbox) = bus.node();
            (Arc::new(broker), inbox)
        }
    }

    #[tokio::test]
    async fn the_journaled_memory_broker_passes_the_contract() {
        let root = std::env::temp_dir().join(format!("rtgate-journal-{}", uuid::Uuid::new_v4().simple()));
        let case = std::sync::atomic::AtomicUsize::new(0);
        run_all(|| {
            let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Durable(tokio::sync::OnceCell::new(), root.join(n.to_string()))
        })
        .await;
        let _ = std::fs::remove_dir_all(root);
    }
}
