//! End-to-end tests: real Redis and PostgreSQL, two or more gateway nodes, workers.
//! One test binary (linking is the slow part of a build); one module per capability.

mod access;
mod bad_input;
mod balancer;
mod broker_contract;
mod chat;
mod console;
mod deploy_files;
mod diary;
mod drain;
mod durability;
mod durable_path;
mod embedded;
mod faults;
mod gamification;
mod hostile;
mod limits;
mod live_access;
mod onetask;
mod openapi;
mod presence;
mod protocol_violations;
mod pubsub_canary;
mod pythia;
mod redis_restart;
mod resume;
mod sdk;
mod server_api;
mod server_publish;
mod session_chat;
mod slow_reader;
mod startup;
mod store_contract;
mod subscriptions;
mod tokens;
mod worker_step;
