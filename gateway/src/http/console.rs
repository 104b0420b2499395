//! The operator's console: the page at `/console` (its three files compiled into the binary, no
//! CDN), and the two server-API routes it reads with the API key: every live node's report
//! (`crate::report`) and a live tail of any group.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use shared::event::Group;
use utoipa::{IntoParams, ToSchema};

use super::error::ApiError;
use super::extract::Backend;
use super::responses::{BadField, KeyThrottled, Unauthorized, Unavailable};
use crate::hub::{Attached, OfGroup, Outbound};
use crate::node::Node;
use crate::presence::DEAD_AFTER;
use crate::protocols::Protocol;
use crate::report::NodeReport;

/// `GET /console` and its files.
pub(crate) async fn page(file: Option<Path<String>>) -> Response {
    let name = file.map(|Path(name)| name).unwrap_or_else(|| "index.html".to_owned());
    let (kind, text) = match name.as_str() {
        "index.html" => ("text/html; charset=utf-8", include_str!("../../console/index.html")),
        "console.js" => ("text/javascript; charset=utf-8", include_str!("../../console/console.js")),
        "console.css" => ("text/css; charset=utf-8", include_str!("../../console/console.css")),
        _ => return ApiError::not_found("file").into_response(),
    };
    // The page holds no data (that comes from the API with the key), so it may be cached a little.
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "max-age=60")], text).into_response()
}

#[derive(Serialize, ToSchema)]
pub(crate) struct Nodes {
    /// Every live node's latest report.
    nodes: Vec<NodeReport>,
}

/// Every live node of the cluster with its latest report (written each heartbeat).
#[utoipa::path(get, path = "/api/v1/console/nodes", tag = "console", security(("api_key" = [])),
    responses((status = 200, description = "the live nodes", body = Nodes), Unauthorized, KeyThrottled, Unavailable))]
pub(crate) async fn nodes(State(app): State<Node>, _backend: Backend) -> Result<Json<Nodes>, ApiError> {
    let reports = app.presence.reports(DEAD_AFTER).await.map_err(|e| {
        tracing::warn!(error = %e, "console: reports not read");
        ApiError::unavailable("the broker is unreachable")
    })?;
    let mut nodes: Vec<NodeReport> = reports.iter().filter_map(|text| serde_json::from_str(text).ok()).collect();
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(Json(Nodes { nodes }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct TailQuery {
    /// The group to follow, as named in Redis: `chat:ID`, `channel:ID`, `session:UUID`, `user:ID`,
    /// `workspace:ID` or `focus:ID`.
    group: String,
}

/// Follows a group live: one JSON line per event published to it anywhere in the cluster, the
/// first line being `{"tailing": GROUP}` once this node is subscribed. Ends when the caller goes,
/// the node drains, or the caller reads too slowly (as a slow socket would be closed).
#[utoipa::path(get, path = "/api/v1/console/tail", tag = "console", params(TailQuery), security(("api_key" = [])),
    responses((status = 200, description = "events as they come, one JSON object per line", content_type = "application/x-ndjson", body = String),
        BadField, Unauthorized, KeyThrottled, Unavailable))]
pub(crate) async fn tail(
    State(app): State<Node>,
    _backend: Backend,
    Query(query): Query<TailQuery>,
) -> Result<Response, ApiError> {
    let group = Group::parse(&query.group).ok_or_else(|| {
        ApiError::bad_field("group", "must be session:UUID, chat:ID, channel:ID, user:ID, workspace:ID or focus:ID")
    })?;
    // Without pub/sub the tail would be a silent one: say so instead.
    app.broker.ping().await.map_err(|_| ApiError::unavailable("the broker is unreachable"))?;
    let (mut attached, outbox) = Attached::attach(&app.hub, None, Protocol::Console.format())
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    attached.join(group.clone()).await;
    let first = format!("{}\n", serde_json::json!({ "tailing": group }));
    let state = (attached, outbox, Some(first), app.shutdown.clone());
    let lines = futures_util::stream::unfold(state, |(attached, outbox, first, drain)| async move {
        if let Some(first) = first {
            return Some((Ok::<_, Infallible>(Bytes::from(first)), (attached, outbox, None, drain)));
        }
        loop {
            let next = tokio::select! {
                _ = attached.link().kicked() => None,
                _ = drain.cancelled() => None,
                next = outbox.recv_async() => next.ok(),
            };
            let frame = match next? {
                Outbound::Frame(frame) => frame,
                Outbound::OfGroup(of_group) => match *of_group {
                    OfGroup::Frame(_, frame) => frame,
                    OfGroup::Leave(_) => continue,
                },
            };
            attached.link().taken(&frame);
            let line = Bytes::from(format!("{}\n", frame.bytes.as_str()));
            return Some((Ok(line), (attached, outbox, None, drain)));
        }
    });
    let headers = [(header::CONTENT_TYPE, "application/x-ndjson"), (header::CACHE_CONTROL, "no-store")];
    Ok((headers, Body::from_stream(lines)).into_response())
}
