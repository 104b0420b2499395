//! What the gateway and the worker share.
//!
//! # Data path
//!
//! A client frame is decoded by the gateway into an [`event::Event`], wrapped in an
//! [`event::Envelope`] and handed to the broker ([`broker::PubSub`]): `publish_and_enqueue` puts
//! it on the group's channel (every node subscribed to that [`event::Group`] receives it), numbers
//! it and keeps it in the group's window ([`broker::GroupLog`], what a reconnecting node or client
//! reads back) and appends a [`jobs::Job`] to the jobs stream ([`broker::JobQueue`]), all in one
//! atomic step. The worker reads the stream and applies batches of jobs through the
//! [`store::Store`]. Names of Redis keys live in [`keys`]; who may connect is decided with
//! [`auth`] and the [`ids`] parsed at the edge; who is online anywhere is kept by [`presence`]
//! ([`presence::UserPresence`], [`presence::SocketQuota`], [`presence::NodeDirectory`]); settings
//! come from [`config`]; every instant on the wire is formatted by [`time`]. Each broker and
//! presence trait has one contract suite that every implementation passes (`broker::contract`,
//! `presence::contract`).

pub mod auth;
pub mod broker;
pub mod config;
pub mod connection;
pub mod event;
pub mod ids;
pub mod jobs;
pub mod keys;
pub mod persistence;
pub mod presence;
pub mod store;
pub mod telemetry;
pub mod time;
