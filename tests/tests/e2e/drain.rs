//! A draining node paces its clients' reconnects: it closes its 1,000 sockets with 1012 at
//! random moments over the drain window (`GATEWAY_DRAIN_WINDOW_MS`), each close's reason
//! carrying a retry hint with jitter (`retry_after_ms=N`) and, on single-group sockets, the
//! resume point (`since=SEQ`). The clients follow the hint to the other node. The closes must be
//! spread over the window; the histograms of the closes and of the arrivals on the other node are
//! printed (the arrivals also wait for the other node to admit them, which on a small machine
//! takes longer than the window).

use std::time::Duration;

use e2e::{token, Client, Cluster};
use futures_util::StreamExt;
use shared::config::Limits;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

const USERS: usize = 100;
const SOCKETS_PER_USER: usize = 10;
const WINDOW: Duration = Duration::from_secs(4);

/// `retry_after_ms=N` from a close reason.
fn retry_hint(reason: &str) -> Option<u64> {
    reason.split("; ").find_map(|part| part.strip_prefix("retry_after_ms=")).and_then(|n| n.parse().ok())
}

#[tokio::test]
async fn a_drain_spreads_the_reconnects_over_its_window() {
    let limits =
        Limits { drain_window: WINDOW, max_connections_per_ip: 0, upgrades_per_ip_per_sec: 0, ..Limits::default() };
    let mut cluster = Cluster::start_with(2, limits).await;
    for u in 0..USERS {
        cluster.user(&format!("dr-{u}"), None).await;
    }
    let (draining, other) = (cluster.node(0).ws(""), cluster.node(1).ws(""));
    let mut clients = Vec::new();
    for u in 0..USERS {
        for _ in 0..SOCKETS_PER_USER {
            let path = format!("/ws/notifications?token={}", token(&format!("dr-{u}")));
            clients.push((Client::connect(&format!("{draining}{path}")).await, format!("{other}{path}")));
        }
    }

    // One event to each user, so that every socket has a position to resume from.
    for u in 0..USERS {
        let body = serde_json::json!({"group": format!("user:dr-{u}"), "event": {"type": "hello"}});
        let (status, _) =
            e2e::http("POST", &cluster.node(1).http("/api/v1/publish"), Some(e2e::API_KEY), Some(body)).await;
        assert_eq!(status, 202);
    }
    for (client, _) in clients.iter_mut() {
        assert_eq!(client.recv().await["type"], "hello");
    }

    let started = Instant::now();
    let followers: Vec<_> = clients
        .into_iter()
        .map(|(client, elsewhere)| {
            tokio::spawn(async move {
                let mut ws = client.into_inner();
                let (code, reason) = loop {
                    match ws.next().await {
                        Some(Ok(Message::Close(Some(frame)))) => {
                            break (u16::from(frame.code), frame.reason.to_string())
                        }
                        Some(Ok(_)) => continue,
                        other => panic!("the socket ended without a close frame: {other:?}"),
                    }
                };
                let closed_at = started.elapsed();
                let hint = retry_hint(&reason).unwrap_or_else(|| panic!("no retry hint in {reason:?}"));
                tokio::time::sleep(Duration::from_millis(hint)).await;
                let _back = Client::connect(&elsewhere).await;
                (code, reason, closed_at, started.elapsed(), hint)
            })
        })
        .collect();
    let node = cluster.nodes.remove(0);
    node.shutdown().await;

    let mut closes = Vec::new();
    let mut arrivals = Vec::new();
    for follower in followers {
        let (code, reason, closed_at, arrived, hint) = follower.await.unwrap();
        assert_eq!(code, 1012, "{reason}");
        assert!(reason.starts_with("Server restarting; retry_after_ms="), "{reason}");
        assert!(reason.contains("; since="), "a single-group socket is told where to resume from: {reason}");
        assert!((250..1250).contains(&hint), "{reason}");
        closes.push(closed_at);
        arrivals.push(arrived);
    }
    assert_eq!(arrivals.len(), USERS * SOCKETS_PER_USER, "every client came back on the other node");

    // The closes the draining node made, and the arrivals on the other node, in tenths of the
    // window from the first one (the arrivals also wait for the other node to admit them).
    let arrivals_seen = histogram(&arrivals);
    println!("reconnect arrivals on the other node per {} ms: {arrivals_seen:?}", (WINDOW / 10).as_millis());
    let closes_seen = histogram(&closes);
    println!("closes on the draining node per {} ms: {closes_seen:?}", (WINDOW / 10).as_millis());
    let spread = *closes.iter().max().unwrap() - *closes.iter().min().unwrap();
    assert!(spread >= WINDOW / 2, "closes spread over at least half the window: {spread:?}");
    let busiest = *closes_seen.iter().max().unwrap();
    assert!(busiest * 4 <= closes.len(), "no tenth of the window takes a quarter of the closes: {closes_seen:?}");
}

/// Counts per tenth of the drain window, from the earliest instant.
fn histogram(instants: &[Duration]) -> Vec<usize> {
    let first = *instants.iter().min().unwrap();
    let slice = (WINDOW / 10).as_millis();
    let mut buckets = vec![0usize; 20];
    for at in instants {
        let i = ((*at - first).as_millis() / slice) as usize;
        buckets[i.min(19)] += 1;
    }
    while buckets.last() == Some(&0) {
        buckets.pop();
    }
    buckets
}
