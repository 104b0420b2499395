//! The accept loop: each TCP connection served by hyper, with what `axum::serve` does not do.
//!
//! * **Upgrade deadline.** A connection must deliver a complete request head within
//!   `upgrade_timeout` (hyper's header read timeout): a client that connects and sends nothing,
//!   or trickles its headers, is closed instead of holding a descriptor forever. An upgraded
//!   WebSocket is past it; its own heartbeat takes over.
//! * **Per-IP cap.** An address at `max_connections_per_ip` open connections has the next one
//!   closed at once (`http::guard`); a connection holds its place until it closes, WebSocket
//!   included.
//! * **Capacity.** Near the descriptor limit a new connection is answered only for its health
//!   probes (`http::guard`).
//! * **Send buffer.** With `send_buffer_bytes` set, each connection's kernel send buffer is fixed
//!   at that size instead of autotuned (up to 4 MiB), so that a client that stops reading is
//!   soon behind in its outbox, where the node sees it (metric, 1013), not in kernel memory.
//! * **Accept errors** (out of descriptors, most often) never end the loop: it pauses briefly and
//!   goes on, so that connections already open keep being served.
//!
//! On shutdown it stops accepting and lets every connection finish its current request; upgraded
//! sockets are drained by their own tasks (`crate::app`).

use std::future::Future;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::guard::{CountedStream, IpGuards};
use crate::metrics::Metrics;

/// Pause after a failed accept (EMFILE and the like), so that the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How each accepted connection is treated.
pub(crate) struct Connections {
    pub(crate) upgrade_timeout: Duration,
    /// 0: the kernel's autotuning.
    pub(crate) send_buffer_bytes: usize,
    pub(crate) guards: std::sync::Arc<IpGuards>,
    pub(crate) metrics: std::sync::Arc<Metrics>,
}

pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    connections: Connections,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let Connections { upgrade_timeout, send_buffer_bytes, guards, metrics } = connections;
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    let signal = stop.clone();
    tasks.spawn(async move {
        shutdown.await;
        signal.cancel();
    });

    loop {
        let (stream, remote) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; pausing");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let Some(slot) = guards.connect(remote.ip()) else {
            Metrics::incr(&metrics.connections_refused);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        if send_buffer_bytes > 0 {
            if let Err(e) = socket2::SockRef::from(&stream).set_send_buffer_size(send_buffer_bytes) {
                tracing::warn!(error = %e, "could not set the send buffer size");
            }
        }
        let at_capacity = guards.at_capacity();
        let router = router.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(axum::extract::ConnectInfo(remote));
            if at_capacity {
                request.extensions_mut().insert(super::guard::AtCapacity);
            }
            let mut router = router.clone();
            async move { tower_service::Service::call(&mut router, request).await }
        });
        let deadline = tokio::time::Instant::now() + upgrade_timeout;
        tasks.spawn(serve_one(stream, remote, slot, service, deadline, stop.clone()));
    }
    tasks.close();
    tasks.wait().await;
}

/// One accepted connection until it ends, or until the node stops serving (then gracefully).
async fn serve_one<S>(
    stream: tokio::net::TcpStream,
    remote: std::net::SocketAddr,
    slot: super::guard::Slot,
    service: S,
    deadline: tokio::time::Instant,
    stop: CancellationToken,
) where
    S: hyper::service::Service<Request<Incoming>, Response = axum::response::Response> + 'static,
    S::Future: Send + 'static,
    S::Error: std::error::Error + Send + Sync + 'static,
{
    // hyper's header timer starts at the first byte: a client that sends nothing at all is timed
    // out here, and the rest of the deadline is what hyper gives the head.
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
        Ok(Ok(n)) if n > 0 => {}
        Ok(_) => return, // closed or broken before a byte
        Err(_) => {
            tracing::debug!(%remote, "closed: nothing sent before the upgrade deadline");
            return;
        }
    }
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    let stream = CountedStream::new(stream, slot);
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(left.max(Duration::from_millis(1)))
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, %remote, "connection ended");
            }
        }
        _ = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}
