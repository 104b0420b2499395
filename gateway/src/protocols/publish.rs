//! How a socket's frame becomes a publication: the one publish path of the protocols, and what a
//! client hears when the broker is away (`unavailable`).

use axum::extract::ws::Utf8Bytes;
use shared::event::{Envelope, Event};

use crate::errors::ClientError;
use crate::node::Node;

/// Publishes a message a client sent, with its job. With a `client_message_id`, once per user and
/// id within `GATEWAY_RESEND_WINDOW_SECS`: a resend publishes nothing and is answered, to this
/// socket only, with the first send as this socket's protocol renders it (the same `message_id`).
pub(crate) async fn publish_send(
    app: &Node,
    render: fn(&Event) -> Option<String>,
    user: &shared::ids::UserId,
    client_id: Option<String>,
    group: &shared::event::Group,
    mut envelope: Envelope,
    mut job: bytes::Bytes,
) -> Result<Option<Utf8Bytes>, ClientError> {
    use tracing::Instrument;
    let span = shared::telemetry::publish_span(group, 1);
    if let Some(traceparent) = shared::telemetry::traceparent(&span) {
        job = shared::jobs::with_traceparent(&traceparent, &job);
        envelope.traceparent = Some(traceparent);
    }
    async move {
        let sent = send(app, render, user, client_id, group, envelope, job).await;
        if sent.is_ok() {
            tracing::debug!(%group, "published");
        }
        sent
    }
    .instrument(span)
    .await
}

async fn send(
    app: &Node,
    render: fn(&Event) -> Option<String>,
    user: &shared::ids::UserId,
    client_id: Option<String>,
    group: &shared::event::Group,
    envelope: Envelope,
    job: bytes::Bytes,
) -> Result<Option<Utf8Bytes>, ClientError> {
    let Some(client_id) = client_id else {
        return app
            .broker
            .publish_and_enqueue(group, envelope.encode(), job)
            .await
            .map(|()| None)
            .map_err(|e| send_failed(app, group, e));
    };
    let once = shared::broker::Once { id: format!("{user}:{client_id}"), ttl: app.config.limits.resend_window };
    match app.broker.publish_once(&once, group, envelope.encode(), job).await {
        Ok(None) => Ok(None),
        Ok(Some(first)) => {
            let first = Envelope::decode(&first).map_err(|_| ClientError::unavailable())?;
            Ok(render_reply(render, &first.event))
        }
        Err(e) => Err(send_failed(app, group, e)),
    }
}

/// `publish_failed` for a socket's own send: one that went out unreplicated has its echo
/// withheld from the sender (`GATEWAY_REDIS_REPLICA_ACKS`), which hears only `unavailable`.
fn send_failed(app: &Node, group: &shared::event::Group, error: shared::broker::BrokerError) -> ClientError {
    let unreplicated = match &error {
        shared::broker::BrokerError::NotReplicated { seq, .. } => Some(*seq),
        _ => None,
    };
    let refused = publish_failed(app, error);
    match unreplicated {
        Some(seq) => refused.withdrawing(group, seq),
        None => refused,
    }
}

/// What a client hears when its frame could not be published (Redis away): `unavailable`.
pub(crate) fn publish_failed(app: &Node, error: shared::broker::BrokerError) -> ClientError {
    crate::metrics::Metrics::incr(&app.metrics.publish_failures);
    tracing::warn!(%error, "publish failed");
    ClientError::unavailable()
}

/// A resend's reply: the first send as the socket's protocol renders it (a publish API event is
/// sent as it is, as on the live path).
fn render_reply(render: fn(&Event) -> Option<String>, event: &Event) -> Option<Utf8Bytes> {
    match event {
        Event::Raw { event } => Some(Utf8Bytes::from(event.to_string())),
        event => render(event).map(Utf8Bytes::from),
    }
}
