//! The end-to-end harness: real servers, real binaries' code paths.
//!
//! * [`RedisServer`] starts a private `redis-server` (AOF on, so a restart keeps the jobs stream);
//!   [`RedisCluster`] a private six-node Redis Cluster, for a test that kills a master or moves a
//!   slot. With `GATEWAY_TEST_REDIS_CLUSTER` set (`scripts/test`'s second pass), [`Cluster`] and
//!   [`TestRedis`] run on that Redis Cluster instead of a private server.
//! * [`TestDb`] creates an isolated PostgreSQL database on the server named by
//!   `GATEWAY_TEST_DATABASE_URL` (`scripts/test` starts a private one) and drops it afterwards.
//! * [`Cluster`] runs gateway nodes in-process through the same `Gateway::build` as the binary, on
//!   port 0 with a random key prefix, plus workers in-process or as processes (to SIGKILL them).
//! * [`Client`] is a WebSocket client; [`http()`] a minimal HTTP client; [`eventually`] waits for a
//!   condition with a deadline instead of sleeping.
//!
//! One module per concept: `redis` (server, freezing proxy), `redis_cluster`, `postgres` (isolated database,
//! private server), `cluster` (in-process nodes and workers, tokens), `process` (the binaries as
//! children), `client` (WebSocket), `http`, `host` (folders, ports, other languages' tools), `wait`.
//!
//! A missing server fails the test with what to install; nothing here skips.

mod client;
mod cluster;
mod host;
mod http;
mod postgres;
mod process;
mod redis;
mod redis_cluster;
mod wait;

pub use client::*;
pub use cluster::*;
pub use host::*;
pub use http::*;
pub use postgres::*;
pub use process::*;
pub use redis::*;
pub use redis_cluster::*;
pub use wait::*;
