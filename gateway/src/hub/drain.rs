//! A drain: every socket of the node closed with 1012 at a random moment over the drain window
//! (each socket serves on until then), so that their reconnects do not all land on the other
//! nodes at once. One task kicks them in turn: the sockets themselves watch nothing but their own
//! kick, which costs them nothing per frame (a node-wide signal polled by every socket on every
//! wake-up did).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::registry::Hub;
use crate::errors::CloseReason;

/// A uniformly random duration below `window`.
pub(crate) fn random_below(window: Duration) -> Duration {
    let ms = window.as_millis() as u64;
    if ms == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis((uuid::Uuid::new_v4().as_u128() % u128::from(ms)) as u64)
}

/// Closes every socket attached to `hub` now over `window`, and every socket attached from now on
/// at once (`Attached::attach`).
pub(crate) async fn drain(hub: Arc<Hub>, window: Duration) {
    hub.draining.store(true, Ordering::Relaxed);
    let mut kicks: Vec<_> = hub.lock().links.values().map(|link| (random_below(window), link.clone())).collect();
    kicks.sort_by_key(|(after, _)| *after);
    let start = tokio::time::Instant::now();
    for (after, link) in kicks {
        tokio::time::sleep_until(start + after).await;
        if let Some(link) = link.upgrade() {
            link.kick(CloseReason::Restarting);
        }
    }
}
