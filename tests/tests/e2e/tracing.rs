//! OpenTelemetry for real: the test runs an OTLP/HTTP receiver that decodes the binaries' protobuf
//! export requests, and gateway and worker processes export to it. One chat message sent on node A
//! to a member on node B and persisted by the worker is one trace with spans from all three, each
//! the child of the span before it; an API request's `traceparent` is continued; an unsampled
//! message crosses Redis exactly as it does with tracing off.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use e2e::{eventually, http_with, token, Client, Cluster, API_KEY};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::{json, Value};
use shared::connection::RedisTarget;

/// One span as exported, ids in hex.
#[derive(Debug, Clone)]
struct Exported {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
}

/// An OTLP/HTTP receiver on a free port: every span it was sent.
struct Receiver {
    endpoint: String,
    spans: Arc<Mutex<Vec<Exported>>>,
}

impl Receiver {
    async fn start() -> Self {
        let spans: Arc<Mutex<Vec<Exported>>> = Arc::default();
        let app = axum::Router::new().route("/v1/traces", axum::routing::post(export)).with_state(spans.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { endpoint, spans }
    }

    fn spans(&self) -> Vec<Exported> {
        self.spans.lock().unwrap().clone()
    }

    /// The environment that makes a process export here, every message sampled (or none).
    fn env(&self, service: &'static str, sampler: &'static str) -> Vec<(&'static str, String)> {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", self.endpoint.clone()),
            ("OTEL_TRACES_SAMPLER", sampler.to_owned()),
            ("OTEL_SERVICE_NAME", service.to_owned()),
            // Export at once rather than every 5 s.
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ]
    }
}

/// `POST /v1/traces`: a protobuf `ExportTraceServiceRequest`, decoded and kept.
async fn export(State(spans): State<Arc<Mutex<Vec<Exported>>>>, body: Bytes) -> impl axum::response::IntoResponse {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export request");
    let mut kept = spans.lock().unwrap();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| r.attributes.iter())
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(name)) => Some(name.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
            kept.push(Exported {
                service: service.clone(),
                name: span.name,
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent: hex(&span.parent_span_id),
            });
        }
    }
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn chat_text(text: &str) -> Value {
    json!({"type": "send_message", "data": {"content": text, "message_type": "text"}})
}

/// The first span of `service` named `name` in `trace` (any trace when `None`).
fn find<'a>(spans: &'a [Exported], service: &str, name: &str, trace: Option<&str>) -> Option<&'a Exported> {
    spans.iter().find(|s| s.service == service && s.name == name && trace.is_none_or(|t| s.trace_id == t))
}

#[tokio::test]
async fn one_chat_message_is_one_trace_across_two_nodes_and_the_worker() {
    let receiver = Receiver::start().await;
    let cluster = Cluster::start(1).await;
    let gateway = env!("CARGO_BIN_EXE_e2e-gateway");
    let (_a, addr_a) = cluster.spawn_node_process_env(gateway, &env_refs(&receiver.env("node-a", "always_on"))).await;
    let (_b, addr_b) = cluster.spawn_node_process_env(gateway, &env_refs(&receiver.env("node-b", "always_on"))).await;
    let worker_env = receiver.env("worker", "always_on");
    let _worker = cluster.spawn_worker_process_with(env!("CARGO_BIN_EXE_e2e-worker"), 15_000, &env_refs(&worker_env));
    for user in ["tr-ann", "tr-bob"] {
        cluster.user(user, None).await;
    }
    cluster.chat("tr-chat", &["tr-ann", "tr-bob"]).await;
    let path = |user: &str| format!("/api/v1/ws/chat/tr-chat?token={}", token(user));
    let mut ann = Client::connect(&format!("ws://{addr_a}{}", path("tr-ann"))).await;
    let mut bob = Client::connect(&format!("ws://{addr_b}{}", path("tr-bob"))).await;

    ann.send_json(chat_text("traced")).await;
    assert_eq!(bob.recv_type("new_message").await["data"]["content"], "traced");

    let publish_name = "publish chat:tr-chat";
    let deliver_name = "deliver chat:tr-chat";
    eventually("node A, node B and the worker exported their spans", || async {
        let spans = receiver.spans();
        let Some(publish) = find(&spans, "node-a", publish_name, None) else { return false };
        let trace = Some(publish.trace_id.as_str());
        find(&spans, "node-b", deliver_name, trace).is_some() && find(&spans, "worker", "persist", trace).is_some()
    })
    .await;
    let spans = receiver.spans();
    let publish = find(&spans, "node-a", publish_name, None).unwrap();
    let trace = Some(publish.trace_id.as_str());
    let receive = find(&spans, "node-a", "receive", trace).expect("the frame's span on node A");
    let deliver = find(&spans, "node-b", deliver_name, trace).unwrap();
    let persist = find(&spans, "worker", "persist", trace).unwrap();
    assert_eq!(receive.parent, "", "the frame starts the trace: {receive:?}");
    assert_eq!(publish.parent, receive.span_id, "publish is the frame's child");
    assert_eq!(deliver.parent, publish.span_id, "node B's delivery is the publication's child");
    assert_eq!(persist.parent, publish.span_id, "the worker's write is the publication's child");
}

#[tokio::test]
async fn an_api_requests_traceparent_is_continued_to_every_node() {
    let receiver = Receiver::start().await;
    let cluster = Cluster::start(1).await;
    let gateway = env!("CARGO_BIN_EXE_e2e-gateway");
    // Nothing sampled by ratio: only the caller's sampled traceparent makes this one traced.
    let (_a, addr_a) =
        cluster.spawn_node_process_env(gateway, &env_refs(&receiver.env("node-a", "parentbased_always_off"))).await;
    let (_b, addr_b) =
        cluster.spawn_node_process_env(gateway, &env_refs(&receiver.env("node-b", "parentbased_always_off"))).await;
    cluster.user("tr-cat", None).await;
    cluster.chat("tr-api", &["tr-cat"]).await;
    let mut cat = Client::connect(&format!("ws://{addr_b}/api/v1/ws/chat/tr-api?token={}", token("tr-cat"))).await;

    let (trace_id, caller_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let traceparent = format!("00-{trace_id}-{caller_span}-01");
    let body = json!({"group": "chat:tr-api", "event": {"type": "bulletin", "n": 1}});
    let url = format!("http://{addr_a}/api/v1/publish");
    let (status, _, reply) =
        http_with("POST", &url, Some(API_KEY), &[("traceparent", traceparent.as_str())], Some(body)).await;
    assert_eq!(status, 202, "{reply}");
    assert_eq!(cat.recv().await["n"], 1);

    eventually("the request and its delivery in the caller's trace", || async {
        let spans = receiver.spans();
        find(&spans, "node-a", "POST /api/v1/publish", Some(trace_id)).is_some()
            && find(&spans, "node-b", "deliver chat:tr-api", Some(trace_id)).is_some()
    })
    .await;
    let spans = receiver.spans();
    let request = find(&spans, "node-a", "POST /api/v1/publish", Some(trace_id)).unwrap();
    assert_eq!(request.parent, caller_span, "the request continues the caller's span");
    let publish = find(&spans, "node-a", "publish chat:tr-api", Some(trace_id)).expect("the publish span");
    assert_eq!(publish.parent, request.span_id);
    assert_eq!(find(&spans, "node-b", "deliver chat:tr-api", Some(trace_id)).unwrap().parent, publish.span_id);
    assert!(spans.iter().all(|s| s.trace_id == trace_id), "nothing else was sampled: {spans:?}");
}

/// What a node publishes for a chat message, as Redis carries it: the payload's field names, top
/// level and event, with the values (ids, times) left out.
async fn published_shape(cluster: &Cluster, addr: std::net::SocketAddr, user: &str, text: &str) -> BTreeSet<String> {
    let RedisTarget::Single(url) = cluster.target() else { panic!("a single Redis") };
    let channel = shared::keys::Keys::new(&cluster.prefix)
        .channel(&shared::event::Group::chat(&shared::ids::ChatId::parse("tr-plain").unwrap()));
    let mut pubsub = redis::Client::open(url.as_str()).unwrap().get_async_pubsub().await.unwrap();
    pubsub.subscribe(&channel).await.unwrap();
    let mut client = Client::connect(&format!("ws://{addr}/api/v1/ws/chat/tr-plain?token={}", token(user))).await;
    client.send_json(chat_text(text)).await;
    use futures_util::StreamExt;
    let payload: String = tokio::time::timeout(e2e::HANG_GUARD, pubsub.on_message().next())
        .await
        .expect("the publication crossed Redis")
        .unwrap()
        .get_payload()
        .unwrap();
    let value: Value = serde_json::from_str(&payload).unwrap();
    let mut keys = BTreeSet::new();
    for (key, inner) in value.as_object().unwrap() {
        keys.insert(key.clone());
        if let Some(object) = inner.as_object() {
            keys.extend(object.keys().map(|k| format!("{key}.{k}")));
        }
    }
    keys
}

#[tokio::test]
async fn an_unsampled_message_crosses_redis_as_it_does_with_tracing_off() {
    let receiver = Receiver::start().await;
    let cluster = Cluster::start(1).await;
    let gateway = env!("CARGO_BIN_EXE_e2e-gateway");
    cluster.user("tr-dan", None).await;
    cluster.chat("tr-plain", &["tr-dan"]).await;
    let (_off, addr_off) = cluster.spawn_node_process(gateway).await;
    let (_unsampled, addr_unsampled) =
        cluster.spawn_node_process_env(gateway, &env_refs(&receiver.env("unsampled", "always_off"))).await;
    let (_sampled, addr_sampled) =
        cluster.spawn_node_process_env(gateway, &env_refs(&receiver.env("sampled", "always_on"))).await;

    let off = published_shape(&cluster, addr_off, "tr-dan", "plain").await;
    let unsampled = published_shape(&cluster, addr_unsampled, "tr-dan", "plain").await;
    assert_eq!(unsampled, off, "an unsampled publication carries nothing more");
    assert!(!off.contains("traceparent"), "{off:?}");
    let sampled = published_shape(&cluster, addr_sampled, "tr-dan", "plain").await;
    assert!(sampled.contains("traceparent"), "a sampled one carries its trace: {sampled:?}");
}

/// Log lines inside a traced span carry its `trace_id`, in JSON logs (and text), and the console's
/// tail shows it beside the event: an operator goes from either to the trace.
#[tokio::test]
async fn log_lines_inside_a_traced_span_carry_its_trace_id() {
    let receiver = Receiver::start().await;
    let cluster = Cluster::start(1).await;
    let dir = e2e::TempDir::new("tracing-logs");
    let log = dir.path().join("node.log");
    let mut env = receiver.env("logged", "always_on");
    env.push(("RUST_LOG", "gateway=debug,info".to_owned()));
    env.push(("LOG_FORMAT", "json".to_owned()));
    let (_node, addr) =
        cluster.spawn_node_process_logging_env(env!("CARGO_BIN_EXE_e2e-gateway"), &log, &env_refs(&env)).await;
    cluster.user("tr-eve", None).await;
    cluster.chat("tr-logs", &["tr-eve"]).await;
    let mut eve = Client::connect(&format!("ws://{addr}/api/v1/ws/chat/tr-logs?token={}", token("tr-eve"))).await;
    // The console's tail of the group, as it streams.
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let mut tail = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /api/v1/console/tail?group=chat:tr-logs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n\r\n"
    );
    tail.write_all(request.as_bytes()).await.unwrap();
    let mut tail = tokio::io::BufReader::new(tail).lines();
    async fn next_line(lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::net::TcpStream>>) -> String {
        tokio::time::timeout(e2e::HANG_GUARD, lines.next_line()).await.expect("a tail line").unwrap().unwrap()
    }
    while !next_line(&mut tail).await.contains("tailing") {}
    eve.send_json(chat_text("logged")).await;
    eve.recv_type("new_message").await;
    let mut traced = next_line(&mut tail).await;
    while !traced.contains("chat_message") {
        traced = next_line(&mut tail).await;
    }

    eventually("the publication's span exported", || async {
        find(&receiver.spans(), "logged", "publish chat:tr-logs", None).is_some()
    })
    .await;
    let trace_id = find(&receiver.spans(), "logged", "publish chat:tr-logs", None).unwrap().trace_id.clone();
    assert!(traced.contains(&format!("\"trace_id\":\"{trace_id}\"")), "the console's tail shows the trace: {traced}");
    eventually("the log line inside the span names the trace", || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines().any(|line| line.contains("\"published\"") && line.contains(&trace_id))
    })
    .await;
}
