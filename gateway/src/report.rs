//! This node's report, written beside its presence heartbeat for the operator's console
//! (`crate::http::console`): sockets by protocol, groups, frame counters, recent closes, its
//! largest groups. JSON readable in `redis-cli monitor` (`SET rt:presence:report:<node>`); the
//! console polls every node's report and computes the rates from two of them.

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use crate::node::Node;
use crate::presence::{DEAD_AFTER, HEARTBEAT};
use crate::protocols::Protocol;

/// Groups a report lists (its largest).
const REPORTED_GROUPS: usize = 50;

/// One node as the console shows it: what it has now and its counters since it started.
#[derive(Serialize, Deserialize, ToSchema)]
pub(crate) struct NodeReport {
    pub(crate) node: String,
    /// `cluster` or `embedded`.
    mode: String,
    /// When the report was made (Unix ms, the node's clock).
    at: i64,
    /// Sockets open now, by protocol.
    sockets: std::collections::BTreeMap<String, i64>,
    /// Groups the node holds.
    groups: i64,
    frames_in: u64,
    frames_out: u64,
    publications_in: u64,
    rate_limited: u64,
    /// Closes since start, by close code.
    closes: std::collections::BTreeMap<u16, u64>,
    /// The latest closes, oldest first.
    recent_closes: Vec<RecentClose>,
    /// The node's largest groups, by sockets on this node.
    largest_groups: Vec<GroupSize>,
    /// What an operator must know: Redis would lose the jobs not yet stored in a crash.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub(crate) struct RecentClose {
    /// Unix ms.
    at: i64,
    code: u16,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub(crate) struct GroupSize {
    group: String,
    sockets: usize,
}

impl NodeReport {
    fn of(app: &Node) -> Self {
        let m = &app.metrics;
        let sockets = Protocol::ALL
            .iter()
            .map(|p| {
                (
                    p.name().to_owned(),
                    m.sockets_open.get_or_create(&crate::metrics::ProtocolLabel { protocol: p.name() }).get(),
                )
            })
            .collect();
        let (recent_closes, closes) = {
            let log = m.close_log.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            (log.recent.iter().map(|&(at, code)| RecentClose { at, code }).collect(), log.counts.clone())
        };
        Self {
            node: app.node_id.clone(),
            mode: if app.config.is_embedded() { "embedded" } else { "cluster" }.to_owned(),
            at: chrono::Utc::now().timestamp_millis(),
            sockets,
            groups: m.groups.get(),
            frames_in: m.frames_in.get(),
            frames_out: m.frames_out.get(),
            publications_in: m.publications_in.get(),
            rate_limited: m.rate_limited.get(),
            closes,
            recent_closes,
            largest_groups: app
                .hub
                .largest_groups(REPORTED_GROUPS)
                .into_iter()
                .map(|(group, sockets)| GroupSize { group, sockets })
                .collect(),
            warnings: m.redis_warning.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect(),
        }
    }
}

/// Writes this node's report with each heartbeat until `stop`.
pub(crate) async fn report(app: Node, stop: CancellationToken) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let text = serde_json::to_string(&NodeReport::of(&app)).expect("a report serializes");
        if let Err(e) = app.presence.report(&app.node_id, &text, DEAD_AFTER).await {
            tracing::debug!(error = %e, "console report not written");
        }
    }
}
