//! What is let in before any handler runs: socket upgrades beyond an address's rate answer 429,
//! and a node at capacity answers 503 to all but its probes.

use super::error::ApiError;
use super::guard;
use crate::node::Node;

/// Socket upgrades from one address beyond its rate are answered 429 before any work is done;
/// at capacity (`guard::AtCapacity`) everything but the probes, the metrics and the API's
/// description is answered 503 (those stay readable: they are what an operator looks at then).
pub(crate) async fn admission(
    axum::extract::State(app): axum::extract::State<Node>,
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
