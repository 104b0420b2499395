//! Building and running a node: `Gateway::build(config)` connects the store and the broker,
//! starts the hub (and, in embedded mode, the worker) and binds the listener; `run(shutdown)`
//! serves until `shutdown` resolves, then drains. Tests call the same `build` with port 0.

use std::future::Future;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use shared::auth::Verifier;
use shared::broker::{Broker, BrokerError, Inbound, MemoryBus, RedisBroker};
use shared::config::GatewayConfig;
use shared::store::{Store, StoreError};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::hub::Hub;
use crate::metrics::Metrics;

/// How long a drain waits for sockets to finish their close handshakes.
const DRAIN_WAIT: Duration = Duration::from_secs(10);

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

/// What every handler and socket task shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

pub struct AppInner {
    pub config: GatewayConfig,
    pub verifier: Verifier,
    pub store: Store,
    pub broker: Arc<dyn Broker>,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    /// Cancelled when the node drains: sockets close with 1012 and `/readyz` answers 503.
    pub shutdown: CancellationToken,
    /// Every socket task, so that a drain can wait for them (axum does not track upgraded sockets).
    pub tracker: TaskTracker,
}

impl Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

pub struct Gateway {
    listener: TcpListener,
    app: AppState,
    /// Embedded mode's in-process worker, stopped after the sockets have drained.
    worker: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

impl Gateway {
    pub async fn build(config: GatewayConfig) -> Result<Self, BuildError> {
        let verifier = Verifier::new(&config.jwt).map_err(BuildError::Jwt)?;
        let store = Store::connect(&config.database_url, 16).await?;
        let (broker, inbox): (Arc<dyn Broker>, mpsc::Receiver<Inbound>) = match &config.redis_url {
            Some(url) => {
                let (broker, inbox) = RedisBroker::with_subscriber(url, &config.redis_prefix)?;
                (Arc::new(broker), inbox)
            }
            None => {
                let (broker, inbox) = MemoryBus::new().node();
                (Arc::new(broker), inbox)
            }
        };
        let metrics = Arc::new(Metrics::default());
        let hub = Hub::start(broker.clone(), inbox, &config.limits, metrics.clone());
        let worker = config.is_embedded().then(|| {
            let stop = CancellationToken::new();
            let settings = worker::WorkerSettings {
                consumer: "embedded".into(),
                batch_size: 512,
                claim_idle: Duration::from_secs(15),
                block: Duration::from_millis(500),
            };
            let task = tokio::spawn(worker::Worker::new(broker.clone(), store.clone(), settings).run(stop.clone()));
            (stop, task)
        });
        let listener = TcpListener::bind(config.bind)
            .await
            .map_err(|source| BuildError::Bind { addr: config.bind, source })?;
        let app = AppState(Arc::new(AppInner {
            config,
            verifier,
            store,
            broker,
            hub,
            metrics,
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
        }));
        Ok(Self { listener, app, worker })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    pub fn state(&self) -> AppState {
        self.app.clone()
    }

    /// Serves until `shutdown` resolves, then drains: stops accepting, closes every socket with
    /// 1012, waits for their close handshakes, and (embedded) lets the worker finish its queue.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let Gateway { listener, app, worker } = self;
        let drain = app.shutdown.clone();
        let router = crate::http::router(app.clone());
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                tracing::info!("draining: closing sockets with 1012");
                drain.cancel();
            })
            .await?;
        app.tracker.close();
        if tokio::time::timeout(DRAIN_WAIT, app.tracker.wait()).await.is_err() {
            tracing::warn!("drain: some sockets did not close in time");
        }
        if let Some((stop, task)) = worker {
            stop.cancel();
            let _ = task.await;
        }
        Ok(())
    }
}
