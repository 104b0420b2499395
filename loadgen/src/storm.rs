//! `loadgen storm`: a reconnect storm, as after a node's drain. Each of G chats first gets three
//! messages; then N sockets (the chats' members, spread over the nodes) connect within a few
//! seconds, each with `?since=` the first message's seq, so that each admission reads the
//! window and replays the two after it. Reports how many were admitted, the admission time
//! (request sent to `101` received) and the time until the replay was in, and, with `--redis`,
//! the Redis commands per admission (`INFO commandstats` across the storm, everything the
//! nodes and the worker did meanwhile included).

use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde_json::json;

use crate::fanout::{self, Percentiles};
use crate::rawws;

/// Messages each chat gets before the storm; a reconnecting socket missed all but the first.
const BEFORE: usize = 3;

#[derive(Debug, serde::Serialize)]
pub(crate) struct Report {
    sockets: usize,
    groups: usize,
    within_secs: f64,
    admitted: usize,
    refused: usize,
    /// Sockets whose replay brought both missed messages.
    caught_up: usize,
    admission_ms: Percentiles,
    caught_up_ms: Percentiles,
    /// Commands Redis ran during the storm, per admission (with `--redis`).
    redis_commands_per_admission: Option<f64>,
    redis_commands_by_name: Vec<(String, u64)>,
}

impl Report {
    pub(crate) fn summary(&self) -> String {
        format!(
            "storm: {} sockets within {:.0} s, admitted {} (refused {}), caught up {}, admission ms p50 {:.2} p99 {:.2} max {:.2}, caught up ms p50 {:.2} p99 {:.2}, Redis commands per admission {}",
            self.sockets,
            self.within_secs,
            self.admitted,
            self.refused,
            self.caught_up,
            self.admission_ms.p50,
            self.admission_ms.p99,
            self.admission_ms.max,
            self.caught_up_ms.p50,
            self.caught_up_ms.p99,
            self.redis_commands_per_admission.map_or("-".to_owned(), |n| format!("{n:.2}")),
        )
    }
}

/// `--within SECS` and `--redis URL` (the rest as `loadgen fanout`'s options).
pub(crate) async fn run(args: &[String]) -> anyhow::Result<Report> {
    let mut rest = Vec::new();
    let (mut within, mut redis_url) = (5.0f64, None);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--within" => within = it.next().context("--within needs a value")?.parse()?,
            "--redis" => redis_url = Some(it.next().context("--redis needs a value")?.clone()),
            _ => {
                rest.push(flag.clone());
                rest.extend(it.next().cloned());
            }
        }
    }
    let options = fanout::Options::parse(&rest)?;
    fanout::create_chats(&options).await.context("creating users and chats through the server API")?;
    let token = |i: usize| shared::auth::issue_hs256(&options.jwt_secret, &format!("lg{}u{i}", options.tag), 3600);
    // Each chat's first message's seq (its publisher is member `group`).
    let mut since = Vec::with_capacity(options.groups);
    for group in 0..options.groups {
        let path = format!("/api/v1/ws/chat/{}?token={}", fanout::chat_id(&options, group), token(group));
        let (mut reader, mut writer) = rawws::connect(&options.nodes[0], &path).await?;
        for n in 0..BEFORE {
            let frame =
                json!({"type": "send_message", "data": {"content": format!("before {n}"), "message_type": "text"}});
            writer.text(frame.to_string().as_bytes()).await?;
        }
        let mut seqs = Vec::new();
        while seqs.len() < BEFORE {
            anyhow::ensure!(reader.fill().await?, "the node closed the publisher's socket");
            while let Some(frame) = reader.next_frame() {
                if let rawws::Frame::Text(text) = frame {
                    let value: serde_json::Value = serde_json::from_slice(text)?;
                    if value["type"] == "new_message" {
                        seqs.push(value["seq"].as_u64().context("a new_message with its seq")?);
                    }
                }
            }
        }
        since.push(seqs[0]);
    }
    let stats_before = match &redis_url {
        Some(url) => Some(commandstats(url).await?),
        None => None,
    };
    let start = tokio::time::Instant::now();
    let spacing = Duration::from_secs_f64(within / options.sockets as f64);
    let tasks: Vec<_> = (0..options.sockets)
        .map(|i| {
            let group = i % options.groups;
            let node = options.nodes[i % options.nodes.len()].clone();
            let path = format!(
                "/api/v1/ws/chat/{}?token={}&since={}",
                fanout::chat_id(&options, group),
                token(i),
                since[group]
            );
            let at = start + spacing * i as u32;
            tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                reconnect(&node, &path).await
            })
        })
        .collect();
    let mut admission = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut replayed = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut admitted, mut refused, mut caught_up) = (0, 0, 0);
    let mut held = Vec::new();
    for task in tasks {
        match task.await? {
            Ok((admitted_in, caught_up_in, ws)) => {
                admitted += 1;
                admission.saturating_record(admitted_in.as_micros().max(1) as u64);
                if let Some(took) = caught_up_in {
                    caught_up += 1;
                    replayed.saturating_record(took.as_micros().max(1) as u64);
                }
                held.push(ws);
            }
            Err(e) => {
                refused += 1;
                if refused <= 3 {
                    eprintln!("loadgen: a reconnect failed: {e:#}");
                }
            }
        }
    }
    let (per_admission, by_name) = match (&redis_url, stats_before) {
        (Some(url), Some(before)) => {
            let after = commandstats(url).await?;
            let mut by_name: Vec<(String, u64)> = after
                .into_iter()
                .map(|(name, calls)| {
                    let was = before.iter().find(|(n, _)| *n == name).map_or(0, |(_, c)| *c);
                    (name, calls.saturating_sub(was))
                })
                .filter(|(name, calls)| *calls > 0 && name != "info")
                .collect();
            by_name.sort_by_key(|(_, calls)| std::cmp::Reverse(*calls));
            let total: u64 = by_name.iter().map(|(_, c)| c).sum();
            (Some(total as f64 / admitted.max(1) as f64), by_name)
        }
        _ => (None, Vec::new()),
    };
    drop(held);
    Ok(Report {
        sockets: options.sockets,
        groups: options.groups,
        within_secs: within,
        admitted,
        refused,
        caught_up,
        admission_ms: Percentiles::of(&admission),
        caught_up_ms: Percentiles::of(&replayed),
        redis_commands_per_admission: per_admission,
        redis_commands_by_name: by_name,
    })
}

/// One reconnect: the time to `101`, and the time until both missed messages came (if they did
/// within 10 s).
async fn reconnect(node: &str, path: &str) -> anyhow::Result<(Duration, Option<Duration>, fanout::Ws)> {
    let sent = Instant::now();
    let (mut reader, writer) = rawws::connect(node, path).await?;
    let admitted = sent.elapsed();
    let mut missed = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    // Frames first: the replay may have come with the upgrade answer.
    loop {
        while let Some(frame) = reader.next_frame() {
            if matches!(frame, rawws::Frame::Text(text) if text.windows(11).any(|w| w == b"new_message")) {
                missed += 1;
            }
        }
        if missed >= BEFORE - 1 {
            break;
        }
        let Ok(more) = tokio::time::timeout_at(deadline, reader.fill()).await else { break };
        if !more? {
            break;
        }
    }
    let caught_up = (missed >= BEFORE - 1).then(|| sent.elapsed());
    Ok((admitted, caught_up, (reader, writer)))
}

/// `INFO commandstats`: each command's calls so far.
async fn commandstats(url: &str) -> anyhow::Result<Vec<(String, u64)>> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(&mut conn).await?;
    Ok(info
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("cmdstat_")?;
            let (name, fields) = rest.split_once(':')?;
            let calls = fields.strip_prefix("calls=")?.split(',').next()?.parse().ok()?;
            Some((name.to_owned(), calls))
        })
        .collect())
}
