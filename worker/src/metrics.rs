//! The worker's own `/metrics` (OpenMetrics text, prometheus-client) and `/healthz`, on
//! `WORKER_METRICS_BIND`: what it persisted, in which batch sizes, how long after publishing,
//! what it dead-lettered and how often a step failed.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

pub struct WorkerMetrics {
    registry: Registry,
    pub(crate) jobs: Counter,
    pub(crate) batches: Counter,
    pub(crate) step_failures: Counter,
    pub(crate) dead_letters: Counter,
    pub(crate) batch_size: Histogram,
    /// From the job's append to the jobs stream (its entry id's time) to its batch's commit.
    pub(crate) lag_seconds: Histogram,
    /// 1 when Redis runs with neither an append-only file nor a replica (`shared::persistence`).
    pub(crate) redis_persistence_at_risk: Gauge,
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let metrics = Self {
            jobs: Counter::default(),
            batches: Counter::default(),
            step_failures: Counter::default(),
            dead_letters: Counter::default(),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            lag_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            redis_persistence_at_risk: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("worker_jobs_persisted", "Jobs persisted and acked", metrics.jobs.clone());
        registry.register("worker_batches", "Batches persisted", metrics.batches.clone());
        registry.register(
            "worker_step_failures",
            "Steps that failed (Redis or the database away) and were retried",
            metrics.step_failures.clone(),
        );
        registry.register("worker_dead_letters", "Jobs moved to the dead-letter stream", metrics.dead_letters.clone());
        registry.register("worker_batch_size_jobs", "Jobs per persisted batch", metrics.batch_size.clone());
        registry.register(
            "worker_publish_to_row_lag_seconds",
            "From a job's append to the jobs stream to its batch's commit",
            metrics.lag_seconds.clone(),
        );
        registry.register(
            "worker_redis_persistence_at_risk",
            "1 when Redis runs with neither an append-only file nor a replica: a crash loses the jobs not yet stored",
            metrics.redis_persistence_at_risk.clone(),
        );
        Self { registry, ..metrics }
    }
}

impl WorkerMetrics {
    /// A persisted batch of jobs whose stream entry ids are `ids` (`{ms}-{n}` on Redis).
    pub(crate) fn persisted<'a>(&self, ids: impl Iterator<Item = &'a str>) {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut count = 0u64;
        for id in ids {
            count += 1;
            // Embedded mode's ids are sequence numbers, not times: no lag from them.
            let appended_ms =
                id.split('-').next().and_then(|ms| ms.parse::<i64>().ok()).filter(|ms| *ms > 1_000_000_000_000);
            if let Some(ms) = appended_ms {
                self.lag_seconds.observe((now_ms - ms).max(0) as f64 / 1000.0);
            }
        }
        self.jobs.inc_by(count);
        self.batches.inc();
        self.batch_size.observe(count as f64);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Serves `/metrics` and `/healthz` on `bind` until `shutdown`. Returns the bound address.
pub async fn serve(
    bind: SocketAddr,
    metrics: Arc<WorkerMetrics>,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(bind).await?;
    let addr = listener.local_addr()?;
    let app =
        axum::Router::new().route("/healthz", get(|| async { "ok" })).route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    ([(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], metrics.render())
                }
            }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await;
    });
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms_with_prometheus_names() {
        let metrics = WorkerMetrics::default();
        let now = chrono::Utc::now().timestamp_millis();
        metrics
            .persisted([format!("{}-0", now - 250), format!("{now}-1"), "7-0".to_owned()].iter().map(String::as_str));
        let text = metrics.render();
        assert!(text.contains("worker_jobs_persisted_total 3"), "{text}");
        assert!(text.contains("worker_batches_total 1"), "{text}");
        assert!(text.contains("worker_batch_size_jobs_count 1"), "{text}");
        assert!(text.contains("worker_publish_to_row_lag_seconds_count 2"), "embedded ids give no lag: {text}");
    }
}
