//! The server API's one way to publish (`publish_all`): every publication and job of a request
//! in one atomic step, and one answer when the broker is away.

use shared::event::{Envelope, Event, Group};

use super::error::ApiError;
use crate::node::Node;

/// The server API's one way to publish: every publication and job of a request in one atomic
/// step (`Broker::publish_all`). A failure answers 503 `unavailable` and nothing went out, so
/// the caller undoes what it stored, or (for an idempotent PUT) the backend's retry completes it.
pub(crate) async fn publish_all(
    app: &Node,
    publications: &[(Group, Envelope)],
    jobs: &[shared::jobs::Job],
) -> Result<(), ApiError> {
    use tracing::Instrument;
    let span = match publications.first() {
        Some((group, _)) => shared::telemetry::publish_span(group, publications.len()),
        None => tracing::Span::none(),
    };
    // A sampled request's publications and jobs carry its trace through Redis.
    let traceparent = shared::telemetry::traceparent(&span);
    let publications: Vec<_> = publications
        .iter()
        .map(|(group, envelope)| match &traceparent {
            Some(tp) => (group.clone(), Envelope { traceparent: Some(tp.clone()), ..envelope.clone() }.encode()),
            None => (group.clone(), envelope.encode()),
        })
        .collect();
    let jobs: Vec<_> = jobs
        .iter()
        .map(|job| match &traceparent {
            Some(tp) => shared::jobs::with_traceparent(tp, &job.encode()),
            None => job.encode(),
        })
        .collect();
    app.broker.publish_all(&publications, &jobs).instrument(span).await.map_err(|e| {
        crate::metrics::Metrics::incr(&app.metrics.publish_failures);
        tracing::warn!(error = %e, "publish failed");
        ApiError::unavailable("the broker is unreachable; retry")
    })
}

/// `publish_all` of one event to one group.
pub(crate) async fn publish(app: &Node, group: &Group, envelope: Envelope) -> Result<(), ApiError> {
    publish_all(app, &[(group.clone(), envelope)], &[]).await
}

/// Tells every node that who may be in `group` changed: their sockets there are re-checked
/// (`crate::access`).
pub(crate) async fn membership_changed(app: &Node, group: Group) -> Result<(), ApiError> {
    publish(app, &Group::control(), Envelope::to_all(Event::MembershipChanged { group })).await
}
