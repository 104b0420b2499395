//! The presence contracts, one per trait, against a real Redis server (the memory implementation
//! runs them in `shared`).

use std::sync::Arc;

use e2e::TestRedis;
use shared::connection::Commands;
use shared::presence::contract;
use shared::presence::{Presence, RedisPresence};

/// A factory of presence stores on a fresh prefix of `redis`, one per case.
fn on(redis: &TestRedis) -> impl Fn() -> Arc<dyn Presence> + '_ {
    move || {
        let prefix = format!("p{}:", uuid::Uuid::new_v4().simple());
        let commands = Commands::new(&redis.target).expect("commands on the test Redis");
        Arc::new(RedisPresence::new(commands, &prefix))
    }
}

#[tokio::test]
async fn redis_presence_passes_the_user_presence_contract() {
    let redis = TestRedis::start().await;
    contract::user_presence(&on(&redis)).await;
}

#[tokio::test]
async fn redis_presence_passes_the_socket_quota_contract() {
    let redis = TestRedis::start().await;
    contract::socket_quota(&on(&redis)).await;
}

#[tokio::test]
async fn redis_presence_passes_the_node_directory_contract() {
    let redis = TestRedis::start().await;
    contract::node_directory(&on(&redis)).await;
}
