//! `/healthz` (liveness), `/readyz` (Redis and database reachable, subscriptions in place, the
//! pub/sub canary coming back, not draining) and `/metrics` (Prometheus text).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiError;
use super::responses::Unavailable;
use crate::node::Node;

/// The process answers.
#[derive(Serialize, ToSchema)]
pub(crate) struct Health {
    #[schema(example = "ok")]
    status: &'static str,
}

/// Liveness: the process answers (nothing else is checked).
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "alive", body = Health)))]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Whether this node should be sent new sockets, and why not.
#[derive(Serialize, ToSchema)]
pub(crate) struct Readiness {
    /// `ready` or `not_ready`.
    status: &'static str,
    /// Redis answers.
    broker: bool,
    /// The database answers.
    database: bool,
    /// Every group this node's sockets need is subscribed.
    subscriptions: bool,
    /// The node hears its own pub/sub canary.
    pubsub_canary: bool,
    /// The node is draining (SIGTERM): it takes no new sockets.
    draining: bool,
}

/// Readiness: Redis and the database reachable, subscriptions in place, the pub/sub canary
/// coming back, not draining.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "ready", body = Readiness), (status = 503, description = "not ready (the body says why)", body = Readiness)))]
pub(crate) async fn readyz(State(app): State<Node>) -> impl IntoResponse {
    let broker = app.broker.ping().await.is_ok();
    let database = app.store.ping().await.is_ok();
    let subscriptions = app.hub.in_sync();
    let pubsub_canary = app.canary_alive.load(std::sync::atomic::Ordering::Relaxed);
    let draining = app.shutdown.is_cancelled();
    let ready = broker && database && subscriptions && pubsub_canary && !draining;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = Readiness {
        status: if ready { "ready" } else { "not_ready" },
        broker,
        database,
        subscriptions,
        pubsub_canary,
        draining,
    };
    (status, Json(body))
}

/// Prometheus metrics of this node (OpenMetrics text).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "the node's metrics", content_type = "application/openmetrics-text", body = String)))]
pub(crate) async fn metrics(State(app): State<Node>) -> impl IntoResponse {
    // Cluster-wide, from Redis: jobs the workers could not apply, waiting for an operator.
    if let Ok(dead) = app.broker.dead_letter_count().await {
        app.metrics.dead_letters.set(dead as i64);
    }
    let text = app.metrics.render();
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
}

/// Users connected anywhere in the cluster.
#[derive(Serialize, ToSchema)]
pub(crate) struct WsStatus {
    /// Distinct authenticated users with a socket of any app open on any node.
    connected_users: u64,
    #[schema(example = "active")]
    status: &'static str,
}

/// Distinct authenticated users with a socket of any app open on any node (diary.md).
#[utoipa::path(get, path = "/api/v1/ws/status", tag = "operations",
    responses((status = 200, description = "the count", body = WsStatus), Unavailable))]
pub(crate) async fn ws_status(State(app): State<Node>) -> Result<Json<WsStatus>, ApiError> {
    match app.presence.count().await {
        Ok(n) => Ok(Json(WsStatus { connected_users: n as u64, status: "active" })),
        Err(e) => {
            tracing::warn!(error = %e, "presence count failed");
            Err(ApiError::unavailable("presence store unreachable"))
        }
    }
}
