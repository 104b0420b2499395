//! The node context: what every handler and socket task of this node shares (its settings, the
//! token verifier, the store, the broker, the hub, presence, metrics, the drain signal). It sits
//! at the bottom of the gateway's layers: it names the parts, and builds none of them
//! (`crate::app` does that), so every module above may take it without importing the world.

use std::ops::Deref;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use shared::auth::Verifier;
use shared::broker::Broker;
use shared::config::GatewayConfig;
use shared::presence::Presence;
use shared::store::Store;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::http::guard::IpGuards;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::motivation::MotivationProvider;

/// This node's parts. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Node(pub(crate) Arc<Parts>);

pub(crate) struct Parts {
    pub(crate) config: GatewayConfig,
    pub(crate) verifier: Verifier,
    pub(crate) store: Store,
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) hub: Arc<Hub>,
    pub(crate) metrics: Arc<Metrics>,
    /// Texts for the Diary socket's `motivation_requested`.
    pub(crate) motivation: Arc<dyn MotivationProvider>,
    /// Who is online anywhere in the cluster.
    pub(crate) presence: Arc<dyn Presence>,
    /// This node's id in the presence store.
    pub(crate) node_id: String,
    /// False while this node's pub/sub canary is overdue (`crate::canary`, `/readyz`).
    pub(crate) canary_alive: Arc<AtomicBool>,
    /// Per-IP limits: connections, upgrades, failed API keys.
    pub(crate) ip_guards: Arc<IpGuards>,
    /// Each user's rate of server-API posts.
    pub(crate) post_rate: crate::http::guard::PostRate,
    /// Cancelled when the node drains: sockets close with 1012 and `/readyz` answers 503.
    pub(crate) shutdown: CancellationToken,
    /// Every socket task, so that a drain can wait for them (axum does not track upgraded sockets).
    pub(crate) tracker: TaskTracker,
}

impl Deref for Node {
    type Target = Parts;
    fn deref(&self) -> &Parts {
        &self.0
    }
}
