//! `/healthz` (liveness), `/readyz` (Redis and database reachable, subscriptions in place, the
//! pub/sub canary coming back, not draining) and `/metrics` (Prometheus text).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use crate::app::AppState;

pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

pub async fn readyz(State(app): State<AppState>) -> impl IntoResponse {
    let broker = app.broker.ping().await.is_ok();
    let database = app.store.ping().await.is_ok();
    let subscriptions = app.hub.in_sync();
    let canary = app.canary_alive.load(std::sync::atomic::Ordering::Relaxed);
    let draining = app.shutdown.is_cancelled();
    let ready = broker && database && subscriptions && canary && !draining;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (
        status,
        Json(json!({
            "status": if ready { "ready" } else { "not_ready" },
            "broker": broker,
            "database": database,
            "subscriptions": subscriptions,
            "pubsub_canary": canary,
            "draining": draining,
        })),
    )
}

pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    // Cluster-wide, from Redis: jobs the workers could not apply, waiting for an operator.
    if let Ok(dead) = app.broker.dead_letter_count().await {
        app.metrics.dead_letters.set(dead as i64);
    }
    let text = app.metrics.render();
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
}

/// `GET /api/v1/ws/status` (diary.md): distinct authenticated users with a socket of any app
/// open on any node.
pub async fn ws_status(State(app): State<AppState>) -> impl IntoResponse {
    match app.presence.count().await {
        Ok(n) => (StatusCode::OK, Json(json!({"connected_users": n, "status": "active"}))),
        Err(e) => {
            tracing::warn!(error = %e, "presence count failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": "unavailable", "message": "presence store unreachable"})),
            )
        }
    }
}
