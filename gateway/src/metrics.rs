//! Node metrics, rendered as OpenMetrics text at `GET /metrics` (prometheus-client). Counters and
//! gauges are atomics: bumped on the fan-out path, they cost next to nothing there.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabel {
    pub protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    pub op: &'static str,
}

/// The buckets of `gateway_broker_call_duration_seconds`: 100 µs to about 3 s.
fn broker_call_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FromLabel {
    pub from: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: String,
}

pub struct Metrics {
    registry: Registry,
    /// Sockets open on this node now, by wire protocol.
    pub sockets_open: Family<ProtocolLabel, Gauge>,
    /// Sockets accepted since start (after authentication).
    pub sockets_accepted: Counter,
    /// Upgrades closed at once for a 4001–4004 reason.
    pub sockets_rejected: Counter,
    /// Sockets closed by the node, by close code (1012 drain, 1013 slow reader, 4004 removed, ...).
    pub closes: Family<CodeLabel, Counter>,
    /// Sockets closed with 1013 because their outbox was full (slow readers).
    pub slow_closes: Counter,
    /// Client frames received.
    pub frames_in: Counter,
    /// Client frames answered `rate_limited`.
    pub rate_limited: Counter,
    /// Frames queued to sockets by the hub.
    pub frames_out: Counter,
    /// Publications received from the broker.
    pub publications_in: Counter,
    /// From a publication's publish (Redis time) to its hand-over to this node's sockets.
    pub delivery_latency: Histogram,
    /// Publishes that failed (the client got `unavailable`).
    pub publish_failures: Counter,
    /// Pub/sub reconnects (the first connect included).
    pub broker_reconnects: Counter,
    /// Groups this node holds.
    pub groups: Gauge,
    /// Pub/sub canaries that did not come back (each one rebuilt the subscriber connection).
    pub canary_failures: Counter,
    /// Connections and upgrades refused by a per-IP limit.
    pub connections_refused: Counter,
    /// Publications missed while the pub/sub connection was down, delivered from group windows.
    pub window_refills: Counter,
    /// Groups whose missed publications could not all be read back (trimmed or lost windows).
    pub window_gaps: Counter,
    /// Jobs in the dead-letter stream, cluster-wide (read from Redis at each scrape).
    pub dead_letters: Gauge,
    /// Each broker call's duration, by operation (`crate::timed_broker`).
    pub broker_calls: Family<OpLabel, Histogram, fn() -> Histogram>,
    /// Bytes queued in the sockets' outboxes, waiting to be written (all sockets of the node).
    pub outbox_bytes: Gauge,
    /// Groups resumed by reconnecting clients, by where the missed frames came from: `window`,
    /// `database` (chat messages past the window) or `resync` (`resync_required`).
    pub resumes: Family<FromLabel, Counter>,
    /// The last closes, for the console (`crate::http::console`).
    pub close_log: std::sync::Mutex<CloseLog>,
    /// 1 when Redis was found to run with neither an append-only file nor a replica
    /// (`shared::persistence`): a crash would lose the jobs not yet stored.
    pub redis_persistence_at_risk: Gauge,
    /// That finding in words, for the console.
    pub redis_warning: std::sync::Mutex<Option<String>>,
}

/// Closes this node made: the most recent ones (Unix ms, code) and a count per code. Read by the
/// console; the Prometheus counter `gateway_closes_total` is the one to alert on.
#[derive(Default)]
pub struct CloseLog {
    pub recent: std::collections::VecDeque<(i64, u16)>,
    pub counts: std::collections::BTreeMap<u16, u64>,
}

/// Closes the console lists.
const RECENT_CLOSES: usize = 32;

impl Default for Metrics {
    fn default() -> Self {
        let m = Self {
            registry: Registry::default(),
            sockets_open: Family::default(),
            sockets_accepted: Counter::default(),
            sockets_rejected: Counter::default(),
            closes: Family::default(),
            slow_closes: Counter::default(),
            frames_in: Counter::default(),
            rate_limited: Counter::default(),
            frames_out: Counter::default(),
            publications_in: Counter::default(),
            delivery_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            publish_failures: Counter::default(),
            broker_reconnects: Counter::default(),
            groups: Gauge::default(),
            canary_failures: Counter::default(),
            connections_refused: Counter::default(),
            window_refills: Counter::default(),
            window_gaps: Counter::default(),
            dead_letters: Gauge::default(),
            broker_calls: Family::new_with_constructor(broker_call_histogram),
            outbox_bytes: Gauge::default(),
            resumes: Family::default(),
            close_log: Default::default(),
            redis_persistence_at_risk: Gauge::default(),
            redis_warning: Default::default(),
        };
        Self { registry: m.registered(), ..m }
    }
}

impl Metrics {
    /// Every metric under its name and help text.
    fn registered(&self) -> Registry {
        let m = self;
        let mut r = Registry::default();
        r.register("gateway_sockets_open", "Sockets open on this node, by protocol", m.sockets_open.clone());
        r.register("gateway_groups", "Groups this node holds", m.groups.clone());
        r.register("gateway_sockets_accepted", "Sockets accepted", m.sockets_accepted.clone());
        r.register("gateway_sockets_rejected", "Sockets refused with 4001-4004", m.sockets_rejected.clone());
        r.register("gateway_closes", "Sockets closed by the node, by close code", m.closes.clone());
        r.register("gateway_slow_closes", "Sockets closed with 1013 (outbox full)", m.slow_closes.clone());
        r.register("gateway_frames_in", "Client frames received", m.frames_in.clone());
        r.register("gateway_rate_limited", "Client frames answered rate_limited", m.rate_limited.clone());
        r.register("gateway_frames_out", "Frames queued to sockets", m.frames_out.clone());
        r.register("gateway_publications_in", "Publications from the broker", m.publications_in.clone());
        r.register(
            "gateway_delivery_latency_seconds",
            "From a publication's publish (Redis clock) to its hand-over to this node's sockets",
            m.delivery_latency.clone(),
        );
        r.register("gateway_publish_failures", "Publishes that failed", m.publish_failures.clone());
        r.register("gateway_broker_reconnects", "Pub/sub (re)connects", m.broker_reconnects.clone());
        r.register(
            "gateway_canary_failures",
            "Pub/sub canaries that did not come back (the subscriber was rebuilt)",
            m.canary_failures.clone(),
        );
        r.register(
            "gateway_connections_refused",
            "Connections and upgrades refused by a per-IP limit",
            m.connections_refused.clone(),
        );
        r.register(
            "gateway_window_refills",
            "Publications missed during a pub/sub reconnect and delivered from the group windows",
            m.window_refills.clone(),
        );
        r.register(
            "gateway_window_gaps",
            "Groups whose publications missed during a reconnect could not all be read back",
            m.window_gaps.clone(),
        );
        r.register(
            "jobs_dead_letters",
            "Jobs in the dead-letter stream (worker dead-letters lists them)",
            m.dead_letters.clone(),
        );
        r.register(
            "gateway_broker_call_duration_seconds",
            "Broker calls (Redis round trips in cluster mode), by operation",
            m.broker_calls.clone(),
        );
        r.register("gateway_outbox_bytes", "Bytes queued in the sockets' outboxes", m.outbox_bytes.clone());
        r.register(
            "gateway_redis_persistence_at_risk",
            "1 when Redis runs with neither an append-only file nor a replica: a crash loses the jobs not yet stored",
            m.redis_persistence_at_risk.clone(),
        );
        r.register(
            "gateway_resumes",
            "Groups resumed by reconnecting clients, by where the missed frames came from (window, database, resync)",
            m.resumes.clone(),
        );
        r
    }
}

impl Metrics {
    pub fn incr(counter: &Counter) {
        counter.inc();
    }

    /// A reconnecting client's group resumed, its missed frames `from` the window, the database,
    /// or not at all (`resync`).
    pub fn resumed(&self, from: &'static str) {
        self.resumes.get_or_create(&FromLabel { from }).inc();
    }

    /// A socket of `protocol` opened (`+1`) or closed (`-1`).
    pub fn socket(&self, protocol: &'static str, delta: i64) {
        self.sockets_open.get_or_create(&ProtocolLabel { protocol }).inc_by(delta);
    }

    pub fn broker_call(&self, op: &'static str, took: std::time::Duration) {
        self.broker_calls.get_or_create(&OpLabel { op }).observe(took.as_secs_f64());
    }

    pub fn closed(&self, code: u16) {
        self.closes.get_or_create(&CodeLabel { code: code.to_string() }).inc();
        let mut log = self.close_log.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if log.recent.len() == RECENT_CLOSES {
            log.recent.pop_front();
        }
        log.recent.push_back((chrono::Utc::now().timestamp_millis(), code));
        *log.counts.entry(code).or_default() += 1;
    }

    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_openmetrics_with_units_labels_and_histograms() {
        let m = Metrics::default();
        m.socket("chat", 1);
        m.socket("chat", 1);
        m.socket("pythia", 1);
        m.socket("chat", -1);
        m.closed(1013);
        m.delivery_latency.observe(0.002);
        let text = m.render();
        assert!(text.contains(r#"gateway_sockets_open{protocol="chat"} 1"#), "{text}");
        assert!(text.contains(r#"gateway_sockets_open{protocol="pythia"} 1"#), "{text}");
        assert!(text.contains(r#"gateway_closes_total{code="1013"} 1"#), "{text}");
        m.broker_call("publish", std::time::Duration::from_micros(300));
        let text = m.render();
        assert!(text.contains(r#"gateway_broker_call_duration_seconds_count{op="publish"} 1"#), "{text}");
        assert!(text.contains("gateway_outbox_bytes 0"), "{text}");
        let log = m.close_log.lock().unwrap();
        assert_eq!((log.recent.len(), log.counts.get(&1013)), (1, Some(&1)));
        assert!(text.contains("gateway_delivery_latency_seconds_count 1"), "{text}");
        assert!(text.contains("gateway_frames_in_total 0"), "{text}");
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
    }
}
