//! The HTTP side, the top of the gateway's layers: the router (sockets, server API, console,
//! health) and nothing else. Each route's handler lives in a module of its own below; what
//! they share sits in leaf modules (`error`, `extract`, `responses`, `publish`).

use axum::routing::{get, post, put};
use axum::Router;

use crate::node::Node;
use crate::ws::routes as sockets;

pub(crate) mod admission;
pub(crate) mod api;
pub(crate) mod bounds;
pub(crate) mod channels;
pub(crate) mod console;
pub(crate) mod error;
pub(crate) mod extract;
pub(crate) mod guard;
pub(crate) mod health;
pub(crate) mod idempotency;
pub(crate) mod linger;
pub(crate) mod onetask;
pub(crate) mod openapi;
pub(crate) mod publish;
pub(crate) mod responses;
pub(crate) mod server;
pub(crate) mod trace;

/// Every route of a node, with the layers that answer before a handler runs.
pub(crate) fn router(app: Node) -> Router {
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
        // The operator's console (`console`).
        .route("/console", get(console::page))
        .route("/console/{file}", get(console::page))
        .route("/api/v1/console/nodes", get(console::nodes))
        .route("/api/v1/console/tail", get(console::tail))
        .route_layer(axum::middleware::from_fn(trace::request))
        .fallback(|| async { error::ApiError::not_found("route") })
        .layer(axum::middleware::from_fn(error::json_errors))
        .layer(axum::middleware::from_fn_with_state(app.clone(), idempotency::middleware))
        .layer(axum::middleware::from_fn_with_state(app.clone(), admission::admission))
        .with_state(app)
}
