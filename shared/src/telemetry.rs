//! Logs, and OpenTelemetry traces that follow one message through the cluster.
//!
//! Tracing is on when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is
//! set: spans go out over OTLP/HTTP (protobuf) in batches, sampled by `OTEL_TRACES_SAMPLER` /
//! `OTEL_TRACES_SAMPLER_ARG` (default: parent-based, ratio 0.01), named by `OTEL_SERVICE_NAME` and
//! `OTEL_RESOURCE_ATTRIBUTES`. Off, no span is made at all (each place that would make one checks
//! one atomic first), so it costs nothing. On, the sampling decision is made once, where a trace
//! starts ([`root_sampled`], [`remote_sampled`]), before any span exists: an unsampled message
//! makes no span anywhere (the SDK, whose sampler then keeps every span it is given, would
//! otherwise build and drop a span per frame, publication and delivery).
//!
//! A message's trace starts where it enters (a socket frame, an API request continuing its
//! `traceparent` header) and travels with its publication through Redis: a sampled publication's
//! envelope and job carry a W3C `traceparent` ([`traceparent`]); an unsampled one carries nothing
//! more than before. Each receiving node's fan-out and the worker's write continue that trace
//! ([`follow`]). Spans carry their `trace_id` as a field, so log lines inside them show it.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::{SpanContext, TraceContextExt, TracerProvider as _};
use opentelemetry::Context;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::config::{ConfigError, LogFormat};

static ENABLED: AtomicBool = AtomicBool::new(false);
static SAMPLING: std::sync::OnceLock<Sampling> = std::sync::OnceLock::new();

/// The sampling ratio when `OTEL_TRACES_SAMPLER` is not set (parent-based).
const DEFAULT_RATIO: f64 = 0.01;

/// `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`, as this process applies them where a
/// trace starts.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sampling {
    /// The share of new traces (a socket frame, a request without `traceparent`) sampled.
    ratio: f64,
    /// A caller's `traceparent` decides for its trace (the `parentbased_*` samplers).
    parent_based: bool,
}

impl Sampling {
    fn from_env() -> Result<Self, ConfigError> {
        let sampler = std::env::var("OTEL_TRACES_SAMPLER").unwrap_or_default();
        Ok(match sampler.trim() {
            "" => Self { ratio: arg_or(DEFAULT_RATIO)?, parent_based: true },
            "always_on" => Self { ratio: 1.0, parent_based: false },
            "always_off" => Self { ratio: 0.0, parent_based: false },
            "traceidratio" => Self { ratio: arg_or(1.0)?, parent_based: false },
            "parentbased_always_on" => Self { ratio: 1.0, parent_based: true },
            "parentbased_always_off" => Self { ratio: 0.0, parent_based: true },
            "parentbased_traceidratio" => Self { ratio: arg_or(1.0)?, parent_based: true },
            other => {
                return Err(ConfigError::Invalid {
                    name: "OTEL_TRACES_SAMPLER",
                    value: other.to_owned(),
                    reason: "always_on, always_off, traceidratio or parentbased_{always_on,always_off,traceidratio}"
                        .into(),
                })
            }
        })
    }
}

/// `OTEL_TRACES_SAMPLER_ARG` if set, else `default`.
fn arg_or(default: f64) -> Result<f64, ConfigError> {
    match std::env::var("OTEL_TRACES_SAMPLER_ARG") {
        Err(_) => Ok(default),
        Ok(raw) => raw.trim().parse::<f64>().map(|r| r.clamp(0.0, 1.0)).map_err(|_| ConfigError::Invalid {
            name: "OTEL_TRACES_SAMPLER_ARG",
            value: raw,
            reason: "a ratio from 0 to 1".into(),
        }),
    }
}

/// Whether a trace that starts here (a socket frame, a request without `traceparent`, a worker's
/// own publication) is sampled. False while tracing is off.
pub fn root_sampled() -> bool {
    if !enabled() {
        return false;
    }
    let ratio = SAMPLING.get().map_or(0.0, |s| s.ratio);
    ratio >= 1.0 || (ratio > 0.0 && uniform() < ratio)
}

/// Whether the trace of a caller's `traceparent` is sampled here: its own flag decides under a
/// `parentbased_*` sampler (the default), the ratio otherwise.
pub fn remote_sampled(traceparent: &str) -> bool {
    if !enabled() {
        return false;
    }
    match SAMPLING.get() {
        Some(s) if s.parent_based => traceparent.ends_with("-01") && remote_context(traceparent).is_some(),
        _ => root_sampled(),
    }
}

/// A uniform draw in [0, 1), from a per-thread xorshift seeded from the process's random hash keys
/// (one per socket frame while tracing is on: not a fresh UUID's system call each time).
fn uniform() -> f64 {
    use std::cell::Cell;
    use std::hash::{BuildHasher, Hasher};
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u64(0x9e37_79b9_7f4a_7c15);
            hasher.finish() | 1
        });
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        (x >> 11) as f64 / (1u64 << 53) as f64
    })
}

/// Whether spans are made and exported (`OTEL_EXPORTER_OTLP_ENDPOINT` set at start).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Flushes the spans still waiting when dropped (the end of `main`).
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`), as text or JSON lines (`LOG_FORMAT`);
/// and, when an OTLP endpoint is set, traces (see the module's text). `service` names the process
/// when `OTEL_SERVICE_NAME` does not.
pub fn init(service: &'static str) -> Result<Telemetry, ConfigError> {
    let filter = || tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let format = LogFormat::from_env()?;
    let provider = endpoint_set().then(|| provider(service)).transpose()?;
    if provider.is_some() {
        let _ = SAMPLING.set(Sampling::from_env()?);
    }
    // Only this project's spans become OTel spans (not a library's: hyper's, sqlx's).
    let ours = tracing_subscriber::filter::Targets::new()
        .with_target("gateway", tracing::Level::INFO)
        .with_target("worker", tracing::Level::INFO)
        .with_target("shared", tracing::Level::INFO);
    let traces =
        provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("rtgate")).with_filter(ours));
    let registry = tracing_subscriber::registry().with(traces);
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => registry.with(logs.with_filter(filter())).try_init(),
        LogFormat::Json => registry.with(logs.json().with_current_span(true).with_filter(filter())).try_init(),
    };
    ENABLED.store(provider.is_some(), Ordering::Relaxed);
    Ok(Telemetry { provider })
}

fn endpoint_set() -> bool {
    ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty()))
}

fn provider(service: &'static str) -> Result<SdkTracerProvider, ConfigError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .build()
        .map_err(|e| ConfigError::Invalid {
            name: "OTEL_EXPORTER_OTLP_ENDPOINT",
            value: std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").unwrap_or_default(),
            reason: e.to_string(),
        })?;
    let mut resource = Resource::builder();
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name="));
    if !named {
        resource = resource.with_service_name(service);
    }
    // The decision is this module's, made where a trace starts (`root_sampled`): the SDK keeps
    // every span it is given.
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .with_sampler(Sampler::AlwaysOn)
        .build())
}

/// The span of one publish call (the publish script): its first group, how many groups. Made
/// only inside a sampled trace (`Span::none()` elsewhere).
pub fn publish_span(group: &crate::event::Group, groups: usize) -> Span {
    if !enabled() || Span::current().is_none() {
        return Span::none();
    }
    new_publish_span(group, groups)
}

/// `publish_span` for a publication that starts its own trace, outside any span (the worker's
/// awards), when `root_sampled` says so.
pub fn root_publish_span(group: &crate::event::Group, groups: usize) -> Span {
    if !root_sampled() {
        return Span::none();
    }
    new_publish_span(group, groups)
}

fn new_publish_span(group: &crate::event::Group, groups: usize) -> Span {
    tracing::info_span!(
        "publish",
        "otel.name" = %format_args!("publish {group}"),
        "otel.kind" = "producer",
        "messaging.system" = "redis",
        "messaging.operation.type" = "send",
        "messaging.destination.name" = group.as_str(),
        "messaging.batch.message_count" = groups,
        trace_id = tracing::field::Empty,
    )
}

/// The span of one publication's fan-out on a node, in the trace of the span that published it
/// (`traceparent`); `fan_out` records its recipients, renders and slowest offer.
pub fn deliver_span(group: &crate::event::Group, seq: Option<u64>, traceparent: &str) -> Span {
    if !enabled() {
        return Span::none();
    }
    let span = tracing::info_span!(
        "deliver",
        "otel.name" = %format_args!("deliver {group}"),
        "otel.kind" = "consumer",
        "messaging.system" = "redis",
        "messaging.operation.type" = "receive",
        "messaging.destination.name" = group.as_str(),
        "rtgate.seq" = seq,
        "rtgate.recipients" = tracing::field::Empty,
        "rtgate.renders" = tracing::field::Empty,
        "rtgate.slowest_offer_us" = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    follow(&span, traceparent);
    span
}

/// The W3C `traceparent` of `span` when it is sampled (what a publication carries through
/// Redis), and `span`'s `trace_id` field recorded for the logs. `None` otherwise.
pub fn traceparent(span: &Span) -> Option<String> {
    if !enabled() || span.is_none() {
        return None;
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if !span_context.is_sampled() {
        return None;
    }
    span.record("trace_id", span_context.trace_id().to_string());
    Some(format!("00-{}-{}-01", span_context.trace_id(), span_context.span_id()))
}

/// Records `span`'s `trace_id` field when it is sampled (a span that starts a trace), so that
/// the log lines inside it carry it.
pub fn mark(span: &Span) {
    let _ = traceparent(span);
}

/// Makes `span` a child of the span `traceparent` names (a publication's, an API request's
/// header), before `span` is first used.
pub fn follow(span: &Span, traceparent: &str) {
    if let Some(parent) = remote_context(traceparent) {
        let _ = span.set_parent(parent);
        if let Some(id) = trace_id(traceparent) {
            span.record("trace_id", id);
        }
    }
}

/// Links `span` to the span `traceparent` names (the worker's batch, to each message's trace).
pub fn link(span: &Span, traceparent: &str) {
    if let Some(parent) = remote_context(traceparent) {
        span.add_link(parent.span().span_context().clone());
    }
}

/// The trace id part of a `traceparent` (`00-<trace id>-<span id>-<flags>`).
pub fn trace_id(traceparent: &str) -> Option<&str> {
    traceparent.split('-').nth(1).filter(|id| id.len() == 32)
}

fn remote_context(traceparent: &str) -> Option<Context> {
    use opentelemetry::propagation::TextMapPropagator;
    let carrier = std::collections::HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    let valid = SpanContext::is_valid(context.span().span_context());
    valid.then_some(context)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ratio_samples_about_its_share() {
        let draws = 100_000;
        let hits = (0..draws).filter(|_| uniform() < 0.01).count();
        assert!((700..1300).contains(&hits), "{hits} of {draws} at 0.01");
    }

    #[test]
    fn a_traceparent_is_read_back() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(trace_id(tp), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        let context = remote_context(tp).expect("valid");
        assert!(context.span().span_context().is_sampled());
        assert!(remote_context("00-nonsense").is_none());
    }
}
