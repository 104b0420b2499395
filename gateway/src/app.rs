//! Building and running a node: `Gateway::build(config)` connects the store and the broker,
//! starts the hub (and, in embedded mode, the worker) and binds the listener; `run(shutdown)`
//! serves until `shutdown` resolves, then drains. Tests call the same `build` with port 0.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use shared::auth::Verifier;
use shared::broker::{Broker, BrokerError, Inbound, MemoryBus, RedisBroker};
use shared::config::GatewayConfig;
use shared::presence::{MemoryPresence, Presence, RedisPresence};
use shared::store::{Store, StoreError};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::AccessTask;
use crate::access::ACCESS_QUEUE;
use crate::canary::Canary;
use crate::hub::{Changes, Hub, Plugs};
use crate::metrics::Metrics;
use crate::node::{Node, Parts};
use crate::presence::{Announcer, PresenceTask};
use crate::protocols::Wire;

/// How long a drain waits, past the drain window and the close grace, for the last sockets.
const DRAIN_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("redis: {0}")]
    Broker(#[from] BrokerError),
    #[error("JWT key: {0}")]
    Jwt(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// The sockets open on one node, as seen from outside it.
#[derive(Clone)]
pub struct LocalSockets(Arc<Hub>);

impl LocalSockets {
    /// `user`'s sockets open on this node.
    pub fn of(&self, user: &shared::ids::UserId) -> usize {
        self.0.sockets_of(user)
    }
}

pub struct Gateway {
    listener: TcpListener,
    app: Node,
    /// The node's tasks beside the sockets, stopped in order once the sockets have drained.
    background: Background,
}

/// The tasks a node runs beside its sockets, each tracked and stopped on shutdown, in stages:
/// the canary first (it would fail once sockets are gone), then presence (leaving the cluster),
/// then the embedded worker (finishing its queue), then the hub, access and report tasks.
struct Background {
    canary: Stage,
    presence: Stage,
    /// Embedded mode's in-process worker.
    worker: Option<Stage>,
    rest: Stage,
}

/// Tasks stopped together: cancelled, then waited for.
#[derive(Default)]
struct Stage {
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Stage {
    async fn stop(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl Background {
    async fn stop(&self) {
        self.canary.stop().await;
        self.presence.stop().await;
        if let Some(worker) = &self.worker {
            worker.stop().await;
        }
        self.rest.stop().await;
    }
}

/// The broker and presence of the mode `config` asks for, and the node's inbox.
async fn connect(
    config: &GatewayConfig,
    store: &Store,
) -> Result<(Arc<dyn Broker>, mpsc::Receiver<Inbound>, Arc<dyn Presence>), BuildError> {
    Ok(match &config.redis {
        Some(target) => {
            let (broker, inbox) = RedisBroker::with_subscriber(target, &config.redis_prefix, config.window)?;
            let broker = broker.with_replica_acks(config.replica_acks);
            let presence = Arc::new(RedisPresence::new(broker.commands(), &config.redis_prefix));
            (Arc::new(broker), inbox, presence)
        }
        None => {
            // Jobs journaled in the SQLite file, so that a crash loses nothing a client saw.
            let bus = match store {
                Store::Sqlite(pool) => MemoryBus::durable(pool.clone(), config.window).await?,
                Store::Postgres(_) => MemoryBus::new(config.window),
            };
            let (broker, inbox) = bus.node();
            (Arc::new(broker), inbox, Arc::new(MemoryPresence::default()))
        }
    })
}

/// Embedded mode's worker, on `stage`.
fn embedded_worker(broker: Arc<dyn Broker>, store: Store, stage: &Stage) {
    let settings = worker::WorkerSettings {
        consumer: "embedded".into(),
        batch_size: 512,
        claim_idle: Duration::from_secs(15),
        block: Duration::from_millis(500),
        after_commit: None,
        after_award_publish: None,
    };
    let worker = worker::Worker::new(broker, store, settings, worker::Rules::default_set());
    stage.tasks.spawn(worker.run(stage.stop.clone()));
}

impl Gateway {
    pub async fn build(config: GatewayConfig) -> Result<Self, BuildError> {
        let verifier = Verifier::new(&config.jwt).map_err(BuildError::Jwt)?;
        let store = Store::connect(&config.database_url, 16).await?;
        let (broker, inbox, presence) = connect(&config, &store).await?;
        let metrics = Arc::new(Metrics::default());
        let broker = crate::timed_broker::TimedBroker::wrap(broker, metrics.clone());
        let background = Background {
            canary: Stage::default(),
            presence: Stage::default(),
            worker: config.is_embedded().then(Stage::default),
            rest: Stage::default(),
        };
        let node_id = crate::presence::node_id();
        let changes = Arc::new(Changes::default());
        let (access_tx, access_rx) = mpsc::channel(ACCESS_QUEUE);
        let plugs = Plugs { renderer: Box::new(Wire), presence: changes.clone(), access: access_tx };
        let rest = &background.rest;
        let hub = crate::hub::start(
            broker.clone(),
            inbox,
            &config.limits,
            metrics.clone(),
            plugs,
            &node_id,
            &rest.tasks,
            rest.stop.clone(),
        );
        let access = AccessTask { hub: Arc::downgrade(&hub), store: store.clone(), changes: access_rx };
        rest.tasks.spawn(access.run(rest.stop.clone()));
        let canary_alive = Arc::new(AtomicBool::new(true));
        let canary = Canary {
            broker: broker.clone(),
            hub: Arc::downgrade(&hub),
            metrics: metrics.clone(),
            interval: config.limits.canary_interval,
            alive: canary_alive.clone(),
        };
        background.canary.tasks.spawn(canary.run(background.canary.stop.clone()));
        let presence_task = PresenceTask {
            store: presence.clone(),
            node: node_id.clone(),
            hub: Arc::downgrade(&hub),
            changes,
            announcer: Announcer { broker: broker.clone(), store: store.clone() },
            applied: Default::default(),
        };
        background.presence.tasks.spawn(presence_task.run(background.presence.stop.clone()));
        if let Some(stage) = &background.worker {
            embedded_worker(broker.clone(), store.clone(), stage);
        }
        let listener =
            TcpListener::bind(config.bind).await.map_err(|source| BuildError::Bind { addr: config.bind, source })?;
        let ip_guards = crate::http::guard::IpGuards::new(&config.limits);
        let post_rate = crate::http::guard::PostRate::new(&config.limits);
        let app = Node(Arc::new(Parts {
            config,
            verifier,
            store,
            broker,
            hub,
            metrics,
            motivation: Arc::new(crate::motivation::PhraseBook::default()),
            presence,
            node_id,
            canary_alive,
            ip_guards,
            post_rate,
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
        }));
        Ok(Self { listener, app, background })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// A view of the node's sockets that outlives `run` (tests count them).
    pub fn local_sockets(&self) -> LocalSockets {
        LocalSockets(self.app.hub.clone())
    }

    /// Serves until `shutdown` resolves, then drains: stops accepting, closes every socket with
    /// 1012, waits for their close handshakes, and (embedded) lets the worker finish its queue.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let Gateway { listener, app, background } = self;
        let drain = app.shutdown.clone();
        let router = crate::http::router(app.clone());
        background.rest.tasks.spawn(crate::report::report(app.clone(), drain.clone()));
        if let Some(target) = app.config.redis.clone() {
            let metrics = app.metrics.clone();
            // Said loudly (log, `/metrics`, console) when Redis would lose the jobs not yet stored.
            background.rest.tasks.spawn(async move {
                let warning = shared::persistence::check_and_log(&target).await;
                metrics.redis_persistence_at_risk.set(i64::from(warning.is_some()));
                *metrics.redis_warning.lock().unwrap_or_else(|p| p.into_inner()) = warning;
            });
        }
        let connections = crate::http::server::Connections {
            upgrade_timeout: app.config.limits.upgrade_timeout,
            send_buffer_bytes: app.config.limits.send_buffer_bytes,
            guards: app.ip_guards.clone(),
            metrics: app.metrics.clone(),
        };
        let (hub, window, tasks) = (app.hub.clone(), app.config.limits.drain_window, background.rest.tasks.clone());
        crate::http::server::serve(listener, router, connections, async move {
            shutdown.await;
            tracing::info!("draining: closing sockets with 1012");
            drain.cancel();
            tasks.spawn(crate::hub::drain(hub, window));
        })
        .await;
        app.tracker.close();
        let drain_wait = app.config.limits.drain_window + app.config.limits.close_grace + DRAIN_WAIT;
        if tokio::time::timeout(drain_wait, app.tracker.wait()).await.is_err() {
            tracing::warn!("drain: some sockets did not close in time");
        }
        background.stop().await;
        Ok(())
    }
}
