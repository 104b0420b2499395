//! Per-IP guards against hostile clients: a cap on open connections (checked at accept, held
//! for as long as the connection lives, WebSocket included), a rate of socket upgrades, and a
//! rate of failed server-API keys. The rates are governor's keyed GCRA limiters.
//!
//! And the node's own capacity: above its descriptor limit less a reserve, a new connection is
//! still accepted but answered only for `/healthz` and `/readyz` (503 and closed otherwise), so
//! that a flood of connections never blinds the orchestrator's probes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Failed API keys allowed from one address: a burst, then this many per second.
const BAD_KEYS_PER_SEC: u32 = 2;
const BAD_KEYS_BURST: u32 = 20;
/// Above this many addresses remembered, limiters forget the ones that are back to full.
const REMEMBERED_ADDRESSES: usize = 10_000;
/// Descriptors kept free below the process's limit: pools, files, probes.
const DESCRIPTOR_RESERVE: usize = 128;

/// The soft limit on open descriptors (`ulimit -n`), from `/proc/self/limits`.
fn descriptor_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

pub(crate) struct IpGuards {
    /// Connections open now, all addresses together.
    open: AtomicUsize,
    /// Above this many open connections the node is at capacity.
    capacity: usize,
    max_connections: usize,
    /// Open connections per address. Held only for an insert or a removal.
    connections: Mutex<HashMap<IpAddr, usize>>,
    upgrades: Option<DefaultKeyedRateLimiter<IpAddr>>,
    bad_keys: DefaultKeyedRateLimiter<IpAddr>,
}

impl IpGuards {
    pub(crate) fn new(limits: &shared::config::Limits) -> Arc<Self> {
        let upgrades = NonZeroU32::new(limits.upgrades_per_ip_per_sec).map(|rate| {
            let burst = NonZeroU32::new(limits.upgrades_per_ip_per_sec.saturating_mul(2)).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        let bad_keys = Quota::per_second(NonZeroU32::new(BAD_KEYS_PER_SEC).expect("nonzero"))
            .allow_burst(NonZeroU32::new(BAD_KEYS_BURST).expect("nonzero"));
        let capacity = descriptor_limit().map_or(usize::MAX, |n| n.saturating_sub(DESCRIPTOR_RESERVE));
        Arc::new(Self {
            open: AtomicUsize::new(0),
            capacity,
            max_connections: limits.max_connections_per_ip,
            connections: Mutex::new(HashMap::new()),
            upgrades,
            bad_keys: RateLimiter::keyed(bad_keys),
        })
    }

    /// A new connection from `ip`, or `None` when that address is at its cap.
    pub(crate) fn connect(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut open = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(ip).or_default();
        if self.max_connections > 0 && *count >= self.max_connections {
            return None;
        }
        *count += 1;
        self.open.fetch_add(1, Ordering::Relaxed);
        Some(Slot { guards: self.clone(), ip })
    }

    /// True when the node is near its descriptor limit: new connections get health answers only.
    pub(crate) fn at_capacity(&self) -> bool {
        self.open.load(Ordering::Relaxed) > self.capacity
    }

    /// True when `ip` may open another socket now.
    pub(crate) fn allow_upgrade(&self, ip: IpAddr) -> bool {
        let Some(limiter) = &self.upgrades else { return true };
        if limiter.len() > REMEMBERED_ADDRESSES {
            limiter.retain_recent();
        }
        limiter.check_key(&ip).is_ok()
    }

    /// Records a wrong API key from `ip`; false once that address has had too many.
    pub(crate) fn bad_key(&self, ip: IpAddr) -> bool {
        if self.bad_keys.len() > REMEMBERED_ADDRESSES {
            self.bad_keys.retain_recent();
        }
        self.bad_keys.check_key(&ip).is_ok()
    }
}

/// Messages a user posts through the server API (`POST /api/v1/messages`), per user on this
/// node, at the sockets' rate (`GATEWAY_RATE_PER_SEC`, burst `GATEWAY_RATE_BURST`): a user's
/// token cannot post faster than their socket may send.
pub(crate) struct PostRate {
    limiter: DefaultKeyedRateLimiter<shared::ids::UserId>,
}

impl PostRate {
    pub(crate) fn new(limits: &shared::config::Limits) -> Self {
        let period = std::time::Duration::from_secs_f64(1.0 / limits.rate_per_sec.max(0.001));
        let burst = NonZeroU32::new(limits.rate_burst.max(1.0) as u32).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period).unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN));
        Self { limiter: RateLimiter::keyed(quota.allow_burst(burst)) }
    }

    /// Ok if `user` may post now; else how long until they may.
    pub(crate) fn check(&self, user: &shared::ids::UserId) -> Result<(), std::time::Duration> {
        use governor::clock::Clock;
        if self.limiter.len() > REMEMBERED_ADDRESSES {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(user)
            .map_err(|not_until| not_until.wait_time_from(governor::clock::DefaultClock::default().now()))
    }
}

/// One open connection of an address; dropping it frees its place.
pub(crate) struct Slot {
    guards: Arc<IpGuards>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.guards.open.fetch_sub(1, Ordering::Relaxed);
        let mut open = self.guards.connections.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// A TCP stream that holds its address's slot for as long as it lives: through an upgrade, the
/// WebSocket owns it, so a socket counts until it closes.
pub(crate) struct CountedStream {
    /// Declared first, so dropped first: the place is free before the peer sees the close.
    _slot: Slot,
    /// Always there until the drop hands it to `linger::close`.
    stream: Option<TcpStream>,
}

impl CountedStream {
    pub(crate) fn new(stream: TcpStream, slot: Slot) -> Self {
        Self { _slot: slot, stream: Some(stream) }
    }

    fn stream(self: Pin<&mut Self>) -> Pin<&mut TcpStream> {
        Pin::new(self.get_mut().stream.as_mut().expect("a stream until dropped"))
    }
}

impl Drop for CountedStream {
    fn drop(&mut self) {
        if let Some(stream) = self.stream.take() {
            super::linger::close(stream);
        }
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        self.stream().poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.stream().poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.stream().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.stream().poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.stream().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(TcpStream::is_write_vectored)
    }
}

/// Marks the requests of a connection accepted while the node was at capacity.
#[derive(Clone, Copy)]
pub(crate) struct AtCapacity;
