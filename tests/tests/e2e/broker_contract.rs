//! The broker contract against a real Redis server (the memory broker runs it in `shared`).

use std::sync::Arc;

use async_trait::async_trait;
use e2e::RedisServer;
use shared::broker::contract::NodeFactory;
use shared::broker::{Broker, Inbound, RedisBroker};
use tokio::sync::mpsc;

/// Nodes on one Redis server sharing a fresh key prefix.
struct Factory {
    url: String,
    prefix: String,
}

#[async_trait]
impl NodeFactory for Factory {
    async fn node(&self) -> (Arc<dyn Broker>, mpsc::Receiver<Inbound>) {
        let (broker, mut inbox) = RedisBroker::with_subscriber(&self.url, &self.prefix, Default::default()).unwrap();
        // Wait for the pub/sub connection, so that the first subscribe is not refused.
        assert_eq!(inbox.recv().await, Some(Inbound::Reconnected));
        (Arc::new(broker), inbox)
    }
}

#[tokio::test]
async fn redis_broker_passes_the_contract() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    shared::broker::contract::run_all(|| Factory {
        url: url.clone(),
        prefix: format!("c{}:", uuid::Uuid::new_v4().simple()),
    })
    .await;
}
