//! A gateway node: terminates WebSockets and meets the other nodes in the broker.
//!
//! # Data path
//!
//! 1. **Upgrade** — `http`'s router maps a path to a handler in `ws::routes`, which
//!    authenticates (`ws::authenticate`: 4001/4002/4003), checks membership (4004), registers the
//!    socket in the `hub` and joins its groups *before* the upgrade completes (`ws::admit`).
//! 2. **Socket actor** — `ws::connection`: one task per socket reads client frames, enforces the
//!    rate limit, and hands each text frame to its protocol's handler in `protocols` (`sessions`,
//!    `diary`, `chat`, `pythia`, `onetask`), which decodes it into its typed frame
//!    (`protocols::frame`: one `#[serde(tag = "type")]` enum per protocol), authorizes it and
//!    publishes an event to a group through the broker (`protocols::publish`), or answers with an
//!    error frame (`errors`: error codes and close reasons live there).
//! 3. **Fan-out** — every node subscribed to the group gets the publication; the hub's dispatcher
//!    (`hub::delivery`) admits it under the hub's lock (duplicate check, position) with a snapshot of
//!    the group's members, renders it once per wire format present (`hub::Renderer`, which
//!    `protocols::Wire` implements) and offers the shared bytes to each member's bounded outbox
//!    (`hub::link`) outside the lock; the member's actor writes it out. A full outbox closes that
//!    socket with 1013. Every frame from a publication carries its group's `seq`; a client that
//!    reconnects with `?since=` (or, on a socket of several groups, `?resume=` and a token) is
//!    first sent what it missed, from the group's window or the database (`resume`), and the
//!    actor skips what the replay already gave (`ws::seams`).
//! 4. **Durable** — the same publish appended a job to the jobs stream; the worker crate
//!    persists it and scores it for gamification.
//!
//! Beside the path: `presence` keeps who is online cluster-wide (from the users and rooms the hub
//! marks as changed) and announces `user_status`; `access` makes membership and account changes
//! act on sockets already open, on every node; `canary` proves that the node's pub/sub connection
//! still delivers; `report` writes the node's report for the console, whose page and routes are
//! in `http::console`; `http` holds the server API (`http::api`, `http::channels`,
//! `http::onetask`) and health; `node` is the context every handler shares, `app` builds and runs
//! a node (tests use the same `Gateway::build`); `metrics` the counters; `motivation` the Diary's
//! texts; `cli` the command line. ARCHITECTURE.md draws the layers these modules form (no module
//! imports one above it; `tests/layers.rs` checks).

pub(crate) mod access;
pub(crate) mod app;
pub(crate) mod canary;
pub(crate) mod cli;
pub(crate) mod errors;
pub(crate) mod http;
pub(crate) mod hub;
pub mod metrics;
pub(crate) mod motivation;
pub(crate) mod node;
pub(crate) mod presence;
pub(crate) mod protocols;
pub(crate) mod report;
pub(crate) mod resume;
pub(crate) mod timed_broker;
pub(crate) mod ws;

pub use app::{Gateway, LocalSockets};

/// The `gateway` binary: serve, or print a development token.
pub async fn main_from_env() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match cli::parse(&args) {
        Ok(command) => command,
        // --help, --version, or a usage error: clap prints it and picks the exit code.
        Err(e) => e.exit(),
    };
    // A bad setting ends here, naming it (`check-config` exists to see just that).
    let config = shared::config::GatewayConfig::from_env()?;
    match command {
        cli::Command::Token { user, ttl } => {
            println!("{}", cli::token(&config, &user, ttl).map_err(anyhow::Error::msg)?);
            Ok(())
        }
        cli::Command::CheckConfig => {
            println!("{}", cli::describe(&config));
            if let Some(target) = &config.redis {
                println!("{}", shared::persistence::check(target).await.note());
            }
            Ok(())
        }
        cli::Command::Serve => {
            let _telemetry = shared::telemetry::init("gateway")?;
            let gateway = Gateway::build(config.clone()).await?;
            let addr = gateway.local_addr();
            if config.is_embedded() {
                println!("{}", cli::embedded_banner(&config, addr.port()));
            }
            tracing::info!(%addr, mode = if config.is_embedded() { "embedded" } else { "cluster" }, "gateway listening");
            gateway.run(worker::shutdown_signal()).await?;
            Ok(())
        }
    }
}
