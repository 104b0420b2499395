//! Each sampled server-API request as a span (`OTEL_EXPORTER_OTLP_ENDPOINT` set): named by its
//! route template, continuing the caller's W3C `traceparent` header (whose sampled flag decides,
//! under the default parent-based sampler), so that a backend's trace goes on through the
//! publication it asks for (`super::publish`) to every node and the worker.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

pub(crate) async fn request(request: Request, next: Next) -> Response {
    let traceparent = request.headers().get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let sampled = match &traceparent {
        Some(traceparent) => shared::telemetry::remote_sampled(traceparent),
        None => shared::telemetry::root_sampled(),
    };
    if !sampled {
        return next.run(request).await;
    }
    let route = request.extensions().get::<MatchedPath>().map_or("", MatchedPath::as_str).to_owned();
    let method = request.method().as_str().to_owned();
    let span = tracing::info_span!(
        "request",
        "otel.name" = %format_args!("{method} {route}"),
        "otel.kind" = "server",
        "http.request.method" = method.as_str(),
        "http.route" = route.as_str(),
        "http.response.status_code" = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    match &traceparent {
        Some(traceparent) => shared::telemetry::follow(&span, traceparent),
        None => shared::telemetry::mark(&span),
    }
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    response
}
