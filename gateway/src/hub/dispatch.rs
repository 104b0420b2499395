//! The dispatcher: the one task that delivers, live publications from the broker's inbox and
//! refilled ones from the subscription manager alike, so that a group's publications reach each
//! member in the order the dispatcher accepted them, and each once.

use std::sync::Weak;

use shared::broker::Inbound;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::commands::Refill;
use super::delivery::deliver;
use super::refill::finish_refill;
use super::registry::Hub;
use crate::metrics::Metrics;

/// Inbox and refills → sockets, until `stop`. Never awaits anything but its two queues.
pub(super) async fn dispatch(
    hub: Weak<Hub>,
    mut inbox: mpsc::Receiver<Inbound>,
    mut refills: mpsc::Receiver<Refill>,
    stop: CancellationToken,
) {
    // Publications delivered from the windows since the last completed resubscription.
    let mut refilled = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            inbound = inbox.recv() => {
                let Some(inbound) = inbound else { return };
                let Some(hub) = hub.upgrade() else { return };
                match inbound {
                    Inbound::Message { group, publication } => deliver(&hub, &group, &publication),
                    Inbound::Reconnected => {
                        Metrics::incr(&hub.metrics.broker_reconnects);
                        hub.manager.resync();
                    }
                    Inbound::Disconnected => hub.in_sync.store(false, std::sync::atomic::Ordering::Relaxed),
                }
            }
            refill = refills.recv() => {
                let Some(refill) = refill else { return };
                let Some(hub) = hub.upgrade() else { return };
                match refill {
                    Refill::Window(group, read) => refilled += finish_refill(&hub, &group, read),
                    Refill::Done => {
                        if refilled > 0 {
                            tracing::info!(refilled, "publications missed during the reconnect delivered from the group windows");
                        }
                        refilled = 0;
                        hub.in_sync.store(true, std::sync::atomic::Ordering::Relaxed);
                        hub.resyncs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
        }
    }
}
