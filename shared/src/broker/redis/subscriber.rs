//! The pub/sub connection of a node on a single Redis: classic `SUBSCRIBE`, one dedicated
//! connection owned by this task. It turns subscribe requests into commands on that connection,
//! forwards publications to the node's inbox, and on losing the connection reconnects with
//! backoff and reports `Inbound::Reconnected` (the hub subscribes again and refills).

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{timed, SubscriberRequest, MAX_BACKOFF};
use crate::broker::{BrokerError, Inbound, Publication};
use crate::connection::COMMAND_TIMEOUT;
use crate::event::Group;
use crate::keys::Keys;

/// Owns the node's pub/sub connection for the life of the process.
pub(super) async fn subscriber_task(
    client: redis::Client,
    keys: Keys,
    mut requests: mpsc::Receiver<SubscriberRequest>,
    inbox: mpsc::Sender<Inbound>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let connected = tokio::time::timeout(COMMAND_TIMEOUT, client.get_async_pubsub()).await;
        let pubsub = match connected {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "redis pub/sub: connect failed, retrying");
                if !refuse_requests_for(backoff, &mut requests).await {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
            Err(_) => {
                tracing::warn!("redis pub/sub: connect timed out, retrying");
                if !refuse_requests_for(backoff, &mut requests).await {
                    return;
                }
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        tracing::info!("redis pub/sub: connected");
        let (mut sink, mut stream) = pubsub.split();
        if inbox.send(Inbound::Reconnected).await.is_err() {
            return; // The node is gone.
        }
        loop {
            tokio::select! {
                request = requests.recv() => {
                    let Some(request) = request else { return };
                    let result = match request {
                        SubscriberRequest::Subscribe(groups, ack) => {
                            let channels: Vec<String> = groups.iter().map(|g| keys.channel(g)).collect();
                            let r = timed(async { Ok(sink.subscribe(&channels).await?) }).await;
                            let failed = r.is_err();
                            let _ = ack.send(r);
                            failed
                        }
                        SubscriberRequest::Unsubscribe(groups, ack) => {
                            let channels: Vec<String> = groups.iter().map(|g| keys.channel(g)).collect();
                            let r = timed(async { Ok(sink.unsubscribe(&channels).await?) }).await;
                            let failed = r.is_err();
                            let _ = ack.send(r);
                            failed
                        }
                        SubscriberRequest::Reconnect(ack) => {
                            tracing::warn!("redis pub/sub: dropping a connection that stopped delivering");
                            let _ = ack.send(Ok(()));
                            true
                        }
                    };
                    if result {
                        break; // Treat a failed command as a lost connection: reconnect and resubscribe.
                    }
                }
                message = stream.next() => {
                    let Some(message) = message else { break };
                    let Some(group) = keys.group_of(message.get_channel_name()) else { continue };
                    let payload = Bytes::copy_from_slice(message.get_payload_bytes());
                    let inbound = Inbound::Message { group: Group::from_name(group), publication: Publication::received(payload) };
                    if inbox.send(inbound).await.is_err() {
                        return;
                    }
                }
            }
        }
        tracing::warn!("redis pub/sub: connection lost, reconnecting");
        if inbox.send(Inbound::Disconnected).await.is_err() {
            return;
        }
    }
}

/// Answers every request with `Disconnected` for `wait`; false when the broker was dropped.
pub(super) async fn refuse_requests_for(wait: Duration, requests: &mut mpsc::Receiver<SubscriberRequest>) -> bool {
    let deadline = tokio::time::sleep(wait);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => return true,
            request = requests.recv() => match request {
                None => return false,
                Some(SubscriberRequest::Subscribe(_, ack) | SubscriberRequest::Unsubscribe(_, ack)) => {
                    let _ = ack.send(Err(BrokerError::Disconnected));
                }
                // Already reconnecting.
                Some(SubscriberRequest::Reconnect(ack)) => {
                    let _ = ack.send(Ok(()));
                }
            },
        }
    }
}
