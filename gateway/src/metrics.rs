//! Node counters, rendered as Prometheus text at `GET /metrics`. Plain atomics: they are bumped
//! on the fan-out path and must cost nothing there.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

#[derive(Default)]
pub struct Metrics {
    /// Sockets open on this node now.
    pub sockets_open: AtomicI64,
    /// Sockets accepted since start (after authentication).
    pub sockets_accepted: AtomicU64,
    /// Upgrades closed at once for a 4001–4004 reason.
    pub sockets_rejected: AtomicU64,
    /// Sockets closed with 1013 because their outbox was full (slow readers).
    pub slow_closes: AtomicU64,
    /// Client frames received.
    pub frames_in: AtomicU64,
    /// Frames queued to sockets by the hub.
    pub frames_out: AtomicU64,
    /// Publications received from the broker.
    pub publications_in: AtomicU64,
    /// Publishes that failed (the client got `unavailable`).
    pub publish_failures: AtomicU64,
    /// Pub/sub reconnects (the first connect included).
    pub broker_reconnects: AtomicU64,
    /// Groups this node is subscribed to.
    pub groups: AtomicI64,
    /// Pub/sub canaries that did not come back (each one rebuilt the subscriber connection).
    pub canary_failures: AtomicU64,
    /// Connections and upgrades refused by a per-IP limit.
    pub connections_refused: AtomicU64,
    /// Publications missed while the pub/sub connection was down, delivered from group windows.
    pub window_refills: AtomicU64,
    /// Groups whose missed publications could not all be read back (trimmed or lost windows).
    pub window_gaps: AtomicU64,
}

impl Metrics {
    pub fn incr(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let rows: [(&str, &str, &str, i64); 14] = [
            ("gateway_sockets_open", "gauge", "Sockets open on this node.", self.sockets_open.load(Ordering::Relaxed)),
            ("gateway_groups", "gauge", "Groups this node holds.", self.groups.load(Ordering::Relaxed)),
            ("gateway_sockets_accepted_total", "counter", "Sockets accepted.", load(&self.sockets_accepted)),
            (
                "gateway_sockets_rejected_total",
                "counter",
                "Sockets refused with 4001-4004.",
                load(&self.sockets_rejected),
            ),
            (
                "gateway_slow_closes_total",
                "counter",
                "Sockets closed with 1013 (outbox full).",
                load(&self.slow_closes),
            ),
            ("gateway_frames_in_total", "counter", "Client frames received.", load(&self.frames_in)),
            ("gateway_frames_out_total", "counter", "Frames queued to sockets.", load(&self.frames_out)),
            ("gateway_publications_in_total", "counter", "Publications from the broker.", load(&self.publications_in)),
            ("gateway_publish_failures_total", "counter", "Publishes that failed.", load(&self.publish_failures)),
            ("gateway_broker_reconnects_total", "counter", "Pub/sub (re)connects.", load(&self.broker_reconnects)),
            (
                "gateway_canary_failures_total",
                "counter",
                "Pub/sub canaries that did not come back (the subscriber was rebuilt).",
                load(&self.canary_failures),
            ),
            (
                "gateway_connections_refused_total",
                "counter",
                "Connections and upgrades refused by a per-IP limit.",
                load(&self.connections_refused),
            ),
            (
                "gateway_window_refills_total",
                "counter",
                "Publications missed during a pub/sub reconnect and delivered from the group windows.",
                load(&self.window_refills),
            ),
            (
                "gateway_window_gaps_total",
                "counter",
                "Groups whose publications missed during a reconnect could not all be read back.",
                load(&self.window_gaps),
            ),
        ];
        let mut out = String::with_capacity(1024);
        for (name, kind, help, value) in rows {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        }
        out
    }
}

fn load(counter: &AtomicU64) -> i64 {
    counter.load(Ordering::Relaxed) as i64
}
