//! The HTTP side: the router (sockets, server API, health), and the JSON error answers.

use axum::routing::{get, post, put};
use axum::Router;
use shared::event::{Envelope, Event, Group};

use crate::app::AppState;
use crate::ws::routes as sockets;
use error::ApiError;

pub mod api;
pub mod channels;
pub mod error;
pub(crate) mod guard;
pub mod health;
pub(crate) mod idempotency;
pub mod onetask;
pub(crate) mod openapi;
pub(crate) mod server;

pub fn router(app: AppState) -> Router {
    Router::new()
        // Sockets (PROTOCOL.md "The sockets").
        .route("/ws/sessions/{session_id}", get(sockets::session))
        .route("/ws/sessions/{session_id}/", get(sockets::session))
        .route("/api/v1/ws/{user_id}", get(sockets::personal))
        .route("/api/v1/ws/status", get(health::ws_status))
        .route("/api/v1/ws/chat/{chat_id}", get(sockets::chat))
        .route("/ws", get(sockets::pythia))
        .route("/ws/notifications", get(sockets::notifications))
        .route("/ws/tasks/{workspace_id}", get(sockets::tasks))
        .route("/ws/focus/{session_id}", get(sockets::focus))
        // Server API (PROTOCOL.md "The server side").
        .route("/api/v1/users/{id}", put(api::put_user).get(api::get_user))
        .route("/api/v1/sessions/{id}", put(api::put_session).get(api::get_session))
        .route("/api/v1/sessions/{id}/messages", get(api::session_messages))
        .route("/api/v1/chats/{id}", put(api::put_chat).get(api::get_chat))
        .route("/api/v1/chats/{id}/messages", get(api::chat_messages))
        .route("/api/v1/channels/{id}", put(channels::put_channel).get(channels::get_channel))
        .route("/api/v1/channels/{id}/members/{user_id}", put(channels::put_member).delete(channels::delete_member))
        .route("/api/v1/channels/{id}/messages", get(channels::channel_messages))
        .route("/api/v1/messages/", post(channels::post_message))
        .route("/api/v1/messages", post(channels::post_message))
        .route("/api/v1/messages/reactions", post(channels::post_reaction))
        .route("/api/v1/workspaces/{id}", put(onetask::put_workspace))
        .route("/api/v1/focus-sessions/{id}", put(onetask::put_focus_session))
        .route("/api/v1/notifications", post(onetask::post_notification))
        .route("/api/v1/task-events", post(onetask::post_task_event))
        .route("/api/v1/publish", post(onetask::post_publish))
        // Operations.
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/api/v1/openapi.json", get(openapi::document))
        // The operator's console (`crate::console`).
        .route("/console", get(crate::console::page))
        .route("/console/{file}", get(crate::console::page))
        .route("/api/v1/console/nodes", get(crate::console::nodes))
        .route("/api/v1/console/tail", get(crate::console::tail))
        .fallback(|| async { ApiError::not_found("route") })
        .layer(axum::middleware::from_fn(error::json_errors))
        .layer(axum::middleware::from_fn_with_state(app.clone(), idempotency::middleware))
        .layer(axum::middleware::from_fn_with_state(app.clone(), admission))
        .with_state(app)
}

/// The server API's one way to publish: every publication and job of a request in one atomic
/// step (`Broker::publish_all`). A failure answers 503 `unavailable` and nothing went out, so
/// the caller undoes what it stored, or (for an idempotent PUT) the backend's retry completes it.
pub(crate) async fn publish_all(
    app: &AppState,
    publications: &[(Group, Envelope)],
    jobs: &[shared::jobs::Job],
) -> Result<(), ApiError> {
    let publications: Vec<_> = publications.iter().map(|(g, e)| (g.clone(), e.encode())).collect();
    let jobs: Vec<_> = jobs.iter().map(shared::jobs::Job::encode).collect();
    app.broker.publish_all(&publications, &jobs).await.map_err(|e| {
        crate::metrics::Metrics::incr(&app.metrics.publish_failures);
        tracing::warn!(error = %e, "publish failed");
        ApiError::unavailable("the broker is unreachable; retry")
    })
}

/// `publish_all` of one event to one group.
pub(crate) async fn publish(app: &AppState, group: &Group, envelope: Envelope) -> Result<(), ApiError> {
    publish_all(app, &[(group.clone(), envelope)], &[]).await
}

/// Tells every node that who may be in `group` changed: their sockets there are re-checked
/// (`crate::access`).
pub(crate) async fn membership_changed(app: &AppState, group: Group) -> Result<(), ApiError> {
    publish(app, &Group::control(), Envelope::to_all(Event::MembershipChanged { group })).await
}

/// Socket upgrades from one address beyond its rate are answered 429 before any work is done;
/// at capacity (`guard::AtCapacity`) everything but the probes, the metrics and the API's
/// description is answered 503 (those stay readable: they are what an operator looks at then).
async fn admission(
    axum::extract::State(app): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let probe = matches!(request.uri().path(), "/healthz" | "/readyz" | "/metrics" | "/api/v1/openapi.json");
    if request.extensions().get::<guard::AtCapacity>().is_some() && !probe {
        crate::metrics::Metrics::incr(&app.metrics.connections_refused);
        let mut response = ApiError::unavailable("this node is at capacity; try another").into_response();
        response.headers_mut().insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
        return response;
    }
    let upgrading = request.headers().get(axum::http::header::UPGRADE).is_some();
    let ip = request.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
    if let (true, Some(ip)) = (upgrading, ip) {
        if !app.ip_guards.allow_upgrade(ip) {
            crate::metrics::Metrics::incr(&app.metrics.connections_refused);
            return ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many new sockets from this address",
            )
            .into_response();
        }
    }
    next.run(request).await
}
