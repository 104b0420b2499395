//! The broker contracts, one per trait, against a real Redis server (the memory broker runs them
//! in `shared`).

use std::sync::Arc;

use async_trait::async_trait;
use e2e::TestRedis;
use shared::broker::contract::NodeFactory;
use shared::broker::{Broker, Inbound, RedisBroker};
use shared::connection::RedisTarget;
use tokio::sync::mpsc;

/// Nodes on one Redis (a server, or the suite's Redis Cluster) sharing a fresh key prefix.
struct Factory {
    target: RedisTarget,
    prefix: String,
}

#[async_trait]
impl NodeFactory for Factory {
    async fn node(&self) -> (Arc<dyn Broker>, mpsc::Receiver<Inbound>) {
        let (broker, mut inbox) = RedisBroker::with_subscriber(&self.target, &self.prefix, Default::default()).unwrap();
        // Wait for the pub/sub connection, so that the first subscribe is not refused.
        assert_eq!(inbox.recv().await, Some(Inbound::Reconnected));
        (Arc::new(broker), inbox)
    }
}

/// A factory of nodes on a fresh prefix of `redis`, for one case.
fn on(redis: &TestRedis) -> impl Fn() -> Factory + '_ {
    move || Factory { target: redis.target.clone(), prefix: format!("c{}:", uuid::Uuid::new_v4().simple()) }
}

#[tokio::test]
async fn redis_broker_passes_the_pubsub_contract() {
    let redis = TestRedis::start().await;
    shared::broker::contract::pubsub::run_all(&on(&redis)).await;
}

#[tokio::test]
async fn redis_broker_passes_the_group_log_contract() {
    let redis = TestRedis::start().await;
    shared::broker::contract::group_log::run_all(&on(&redis)).await;
}

#[tokio::test]
async fn redis_broker_passes_the_job_queue_contract() {
    let redis = TestRedis::start().await;
    shared::broker::contract::jobs::run_all(&on(&redis)).await;
}
