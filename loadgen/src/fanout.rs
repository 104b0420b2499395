//! `loadgen fanout`: N sockets in G groups spread over the given nodes, one publisher per group
//! sending at a fixed total rate; every socket counts what it receives. Reports deliveries
//! expected and received, loss, duplicates, close codes, deliveries per second, latency from send
//! to receipt (HDR histogram), and CPU seconds and peak RSS of the given processes and of itself.
//!
//! Two targets speak different protocols for the same scenario:
//! * `gateway`: chat.txt's chat socket (`/api/v1/ws/chat/{chat}`); users and chats are created
//!   through the server API first, tokens signed with the JWT secret;
//! * `socketio`: the Socket.IO peer of `bench/peers/socketio` (Engine.IO v4 frames over a raw
//!   WebSocket: `40` to connect, `42["join",room]`, `42["message",{...}]`);
//! * `floor`: the bare server of `bench/peers/floor` (the chat socket's frames, no accounts);
//! * `sockudo`: Sockudo, a Pusher-protocol server (protocol 7: `/app/{key}`, a private channel
//!   per group subscribed with an HMAC-SHA256 signature of the app secret, `client-message`
//!   events). Pusher does not echo a client event to its sender: a message is expected by the
//!   other members of its group only.
//!
//! Each message's content is `lg|{group}|{seq}|{micros since the run's start}`, so a receiver
//! finds its group, number and send time without parsing the frame as JSON.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::rawws;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Target {
    Gateway,
    SocketIo,
    /// The bare server of `bench/peers/floor`: the gateway's chat frames, rooms at `/ws/{room}`.
    Floor,
    /// Sockudo (Pusher protocol 7).
    Sockudo,
}

#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) target: Target,
    /// `host:port` of each node; sockets are spread over them round-robin.
    pub(crate) nodes: Vec<String>,
    pub(crate) api_key: String,
    pub(crate) jwt_secret: String,
    /// The Pusher app's key and secret (sockudo target).
    pub(crate) app_key: String,
    pub(crate) app_secret: String,
    pub(crate) sockets: usize,
    pub(crate) groups: usize,
    /// Messages per second, all publishers together.
    pub(crate) rate: f64,
    pub(crate) seconds: f64,
    /// The servers' processes: their CPU and peak RSS are reported, and their CPU per delivery.
    pub(crate) pids: Vec<u32>,
    /// Further processes reported but not counted per delivery (Redis, the worker).
    pub(crate) extra_pids: Vec<u32>,
    /// Share of the sockets that stop reading once the load starts (slow consumers).
    pub(crate) slow: f64,
    /// Distinguishes this run's users and chats from an earlier run's on the same database.
    pub(crate) tag: String,
}

impl Options {
    pub(crate) fn parse(args: &[String]) -> anyhow::Result<Self> {
        let mut options = Options {
            target: Target::Gateway,
            nodes: Vec::new(),
            api_key: String::new(),
            jwt_secret: String::new(),
            app_key: String::new(),
            app_secret: String::new(),
            sockets: 1000,
            groups: 10,
            rate: 100.0,
            seconds: 10.0,
            pids: Vec::new(),
            extra_pids: Vec::new(),
            slow: 0.0,
            tag: format!("{}", std::process::id()),
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let value = it.next().with_context(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--target" => {
                    options.target = match value.as_str() {
                        "gateway" => Target::Gateway,
                        "socketio" => Target::SocketIo,
                        "floor" => Target::Floor,
                        "sockudo" => Target::Sockudo,
                        other => bail!("--target gateway|socketio|floor|sockudo, not {other}"),
                    }
                }
                "--nodes" => options.nodes = value.split(',').map(str::to_owned).collect(),
                "--api-key" => options.api_key = value.clone(),
                "--jwt-secret" => options.jwt_secret = value.clone(),
                "--app-key" => options.app_key = value.clone(),
                "--app-secret" => options.app_secret = value.clone(),
                "--sockets" => options.sockets = value.parse()?,
                "--groups" => options.groups = value.parse()?,
                "--rate" => options.rate = value.parse()?,
                "--seconds" => options.seconds = value.parse()?,
                "--pids" => options.pids = pid_list(value)?,
                "--extra-pids" => options.extra_pids = pid_list(value)?,
                "--slow" => options.slow = value.parse()?,
                "--tag" => options.tag = value.clone(),
                other => bail!("unknown option {other}"),
            }
        }
        if options.nodes.is_empty() || options.groups == 0 || options.sockets < options.groups {
            bail!("--nodes is required, and --sockets must be at least --groups (at least 1)");
        }
        Ok(options)
    }
}

impl Options {
    /// Whether socket `i` stops reading during the load: every `1/slow`-th socket, never a
    /// publisher (the first socket of each group).
    fn is_slow(&self, i: usize) -> bool {
        let every = if self.slow > 0.0 { (1.0 / self.slow).round().max(1.0) as usize } else { 0 };
        every > 0 && i >= self.groups && i.is_multiple_of(every)
    }
}

/// A slow consumer's kernel receive buffer: a client on a thin link.
const SLOW_RECEIVE_BUFFER: u32 = 4096;

/// `1,2,3` (empty items allowed, as a script's empty variable gives).
fn pid_list(value: &str) -> anyhow::Result<Vec<u32>> {
    Ok(value.split(',').filter(|p| !p.is_empty()).map(str::parse).collect::<Result<_, _>>()?)
}

/// What one socket saw.
#[derive(Default)]
pub(crate) struct SocketStats {
    pub(crate) received: u64,
    pub(crate) duplicates: u64,
    /// Send-to-receipt latencies, microseconds, with the message's group and seq.
    pub(crate) latencies: Vec<(u32, u32, u32)>,
    pub(crate) close_code: Option<u16>,
    /// Highest seq seen per group (a socket is in one group; the map keeps the counter honest).
    last_seq: HashMap<u32, u64>,
}

impl SocketStats {
    /// Counts one frame's `lg|...` content, if it has one.
    pub(crate) fn count(&mut self, frame: &[u8], now_micros: u64) {
        let Some(start) = frame.windows(3).position(|w| w == b"lg|") else { return };
        let rest = &frame[start + 3..];
        // The content ends at its closing quote (escaped where the event's data is a JSON string).
        let end = rest.iter().position(|b| *b == b'"' || *b == b'\\').unwrap_or(rest.len());
        let mut fields = rest[..end].split(|b| *b == b'|').map(number);
        let (Some(Some(group)), Some(Some(seq)), Some(Some(sent))) = (fields.next(), fields.next(), fields.next())
        else {
            return;
        };
        let group = group as u32;
        let last = self.last_seq.entry(group).or_insert(0);
        if seq <= *last {
            self.duplicates += 1;
            return;
        }
        *last = seq;
        self.received += 1;
        let latency = now_micros.saturating_sub(sent).min(u32::MAX as u64) as u32;
        self.latencies.push((group, seq.min(u32::MAX as u64) as u32, latency));
    }
}

/// A decimal number of ASCII digits.
fn number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, d| d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0')))
}

/// The run's clock: microseconds since it started, the same in every task.
#[derive(Clone, Copy)]
pub(crate) struct Clock(pub(crate) Instant);

impl Clock {
    fn micros(&self) -> u64 {
        self.0.elapsed().as_micros() as u64
    }
}

/// What the run reports.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Report {
    pub(crate) target: &'static str,
    pub(crate) sockets: usize,
    pub(crate) groups: usize,
    pub(crate) slow_sockets: usize,
    pub(crate) messages_sent: u64,
    pub(crate) deliveries_expected: u64,
    pub(crate) deliveries_received: u64,
    pub(crate) lost: u64,
    pub(crate) duplicates: u64,
    /// How the sockets that kept reading were closed, if they were.
    pub(crate) close_codes: HashMap<u16, u64>,
    /// How the slow sockets found themselves closed once they read again.
    pub(crate) slow_close_codes: HashMap<u16, u64>,
    /// Sockets the gateway nodes closed with 1013 during the run (gateway target).
    pub(crate) server_slow_closes: Option<u64>,
    pub(crate) deliveries_per_sec: f64,
    pub(crate) latency_ms: Percentiles,
    /// Per message, the latency until the last socket of its group had it.
    pub(crate) last_socket_ms: Percentiles,
    /// Per process given with `--pids`: CPU seconds during the load, and peak RSS.
    pub(crate) processes: Vec<ProcessUse>,
    pub(crate) cpu_secs_per_100k_deliveries: f64,
    pub(crate) loadgen_cpu_secs: f64,
}

#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct Percentiles {
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) p999: f64,
    pub(crate) max: f64,
}

impl Percentiles {
    pub(crate) fn of(histogram: &Histogram<u64>) -> Self {
        let ms = |micros: u64| micros as f64 / 1000.0;
        if histogram.is_empty() {
            return Self::default();
        }
        Self {
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
        }
    }
}

#[derive(Debug, serde::Serialize)]
pub(crate) struct ProcessUse {
    pub(crate) pid: u32,
    pub(crate) cpu_secs: f64,
    pub(crate) peak_rss_kib: u64,
}

/// CPU seconds (user + system) a process has used so far; `None` when it is gone.
fn cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0) // USER_HZ is 100 on Linux.
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches(" kB").trim().to_owned()))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// One HTTP/1.1 request on its own connection; returns the status.
async fn http(host: &str, method: &str, path: &str, bearer: &str, body: &str) -> anyhow::Result<u16> {
    Ok(http_answer(host, method, path, bearer, body).await?.0)
}

/// The status and the whole answer (head included) of one request.
async fn http_answer(host: &str, method: &str, path: &str, bearer: &str, body: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(host).await?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {bearer}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).context("an HTTP status line")?;
    Ok((status, text))
}

/// Sockets the gateway nodes have closed with 1013 so far (their `gateway_closes_total`). A
/// client that is not reading cannot see that close frame: it usually sits behind what the
/// client has not read, and the node drops the connection when the close grace is over.
async fn slow_closes(options: &Options) -> u64 {
    let mut total = 0;
    for node in &options.nodes {
        if let Ok((_, text)) = http_answer(node, "GET", "/metrics", "", "").await {
            total += text
                .lines()
                .find_map(|l| l.strip_prefix(r#"gateway_closes_total{code="1013"} "#))
                .and_then(|n| n.trim().parse::<f64>().ok())
                .unwrap_or(0.0) as u64;
        }
    }
    total
}

/// Creates the users and one chat per group (gateway target), 32 requests at a time.
pub(crate) async fn create_chats(options: &Options) -> anyhow::Result<()> {
    let host = &options.nodes[0];
    let user = |i: usize| format!("lg{}u{i}", options.tag);
    let users: Vec<usize> = (0..options.sockets).collect();
    for chunk in users.chunks(32) {
        let puts = chunk.iter().map(|i| {
            let body = json!({ "username": user(*i) }).to_string();
            async move { http(host, "PUT", &format!("/api/v1/users/{}", user(*i)), &options.api_key, &body).await }
        });
        for status in futures_util::future::join_all(puts).await {
            let status = status?;
            anyhow::ensure!(status == 200 || status == 201, "creating a user answered {status}");
        }
    }
    for g in 0..options.groups {
        let members: Vec<String> = (0..options.sockets).filter(|i| i % options.groups == g).map(user).collect();
        let body = json!({ "member_ids": members }).to_string();
        let status =
            http(host, "PUT", &format!("/api/v1/chats/{}", chat_id(options, g)), &options.api_key, &body).await?;
        anyhow::ensure!(status == 200 || status == 201, "creating a chat answered {status}");
    }
    Ok(())
}

pub(crate) fn chat_id(options: &Options, group: usize) -> String {
    format!("lg{}c{group}", options.tag)
}

pub(crate) type Ws = (rawws::Reader, rawws::Writer);

/// Opens socket `i` and puts it in its group; returns it ready for the load.
async fn open(options: &Options, i: usize) -> anyhow::Result<Ws> {
    let node = &options.nodes[i % options.nodes.len()];
    let group = i % options.groups;
    match options.target {
        Target::Gateway => {
            let token = shared::auth::issue_hs256(&options.jwt_secret, &format!("lg{}u{i}", options.tag), 3600);
            let path = format!("/api/v1/ws/chat/{}?token={token}", chat_id(options, group));
            Ok(rawws::connect_with(node, &path, options.is_slow(i).then_some(SLOW_RECEIVE_BUFFER)).await?)
        }
        Target::Floor => {
            let path = format!("/ws/{}", chat_id(options, group));
            Ok(rawws::connect_with(node, &path, options.is_slow(i).then_some(SLOW_RECEIVE_BUFFER)).await?)
        }
        Target::SocketIo => {
            let receive_buffer = options.is_slow(i).then_some(SLOW_RECEIVE_BUFFER);
            let (mut reader, mut writer) =
                rawws::connect_with(node, "/socket.io/?EIO=4&transport=websocket", receive_buffer).await?;
            // Engine.IO open (`0{...}`); connect to the default namespace (`40`, answered
            // `40{...}`: nothing may be emitted before); join the room (answered `42["joined"]`).
            let mut step = 0;
            loop {
                // Frames first: the open packet may have come with the upgrade answer.
                while let Some(frame) = reader.next_frame() {
                    let rawws::Frame::Text(text) = frame else { continue };
                    if step == 0 && text.starts_with(b"0") {
                        writer.text(b"40").await?;
                        step = 1;
                    } else if step == 1 && text.starts_with(b"40") {
                        writer.text(format!("42[\"join\",\"room{group}\"]").as_bytes()).await?;
                        step = 2;
                    } else if step == 2 && text.starts_with(b"42[\"joined\"") {
                        return Ok((reader, writer));
                    }
                }
                if !reader.fill().await? {
                    break;
                }
            }
            bail!("the Socket.IO peer closed before the join was confirmed (step {step})")
        }
        Target::Sockudo => {
            let receive_buffer = options.is_slow(i).then_some(SLOW_RECEIVE_BUFFER);
            let path = format!("/app/{}?protocol=7&client=loadgen&version=1.0", options.app_key);
            let (mut reader, mut writer) = rawws::connect_with(node, &path, receive_buffer).await?;
            let channel = pusher_channel(options, group);
            // `pusher:connection_established` names the socket; the subscription is signed with it.
            let mut subscribed = false;
            loop {
                while let Some(frame) = reader.next_frame() {
                    let rawws::Frame::Text(text) = frame else { continue };
                    let event: serde_json::Value = serde_json::from_slice(text)?;
                    match event["event"].as_str().unwrap_or_default() {
                        "pusher:connection_established" if !subscribed => {
                            let data: serde_json::Value =
                                serde_json::from_str(event["data"].as_str().context("connection data")?)?;
                            let socket_id = data["socket_id"].as_str().context("a socket_id")?;
                            let auth = pusher_auth(options, socket_id, &channel);
                            let subscribe =
                                json!({"event": "pusher:subscribe", "data": {"auth": auth, "channel": channel}});
                            writer.text(subscribe.to_string().as_bytes()).await?;
                            subscribed = true;
                        }
                        "pusher_internal:subscription_succeeded" => return Ok((reader, writer)),
                        "pusher:error" => bail!("sockudo refused the socket: {event}"),
                        _ => {}
                    }
                }
                if !reader.fill().await? {
                    break;
                }
            }
            bail!("sockudo closed before the subscription was confirmed")
        }
    }
}

fn pusher_channel(options: &Options, group: usize) -> String {
    format!("private-{}", chat_id(options, group))
}

/// `key:hex(HMAC-SHA256(secret, "socket_id:channel"))`, a private channel's signature.
fn pusher_auth(options: &Options, socket_id: &str, channel: &str) -> String {
    use hmac::Mac;
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(options.app_secret.as_bytes()).expect("HMAC takes any key");
    mac.update(format!("{socket_id}:{channel}").as_bytes());
    let signature: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("{}:{signature}", options.app_key)
}

fn message_frame(plan: &Plan, seq: u64, sent: u64) -> String {
    let group = plan.group;
    let content = format!("lg|{group}|{seq}|{sent}");
    match plan.target {
        Target::Gateway | Target::Floor => {
            json!({"type": "send_message", "data": {"content": content, "message_type": "text"}}).to_string()
        }
        Target::SocketIo => format!("42[\"message\",{}]", json!({"room": format!("room{group}"), "content": content})),
        Target::Sockudo => {
            json!({"event": "client-message", "channel": plan.channel, "data": {"content": content}}).to_string()
        }
    }
}

/// The life of one socket during the load.
pub(crate) struct Plan {
    pub(crate) target: Target,
    pub(crate) group: usize,
    /// The group's Pusher channel (sockudo target; empty otherwise).
    pub(crate) channel: String,
    /// Sends one message per period while the load runs (one socket per group).
    pub(crate) publish_every: Option<Duration>,
    /// Stops reading once the load starts, and reads again once it is over (to find how the
    /// server closed it).
    pub(crate) slow: bool,
    pub(crate) start: tokio::time::Instant,
    pub(crate) end: tokio::time::Instant,
}

pub(crate) async fn drive(
    ws: Ws,
    plan: Plan,
    clock: Clock,
    sent: Arc<AtomicU64>,
    stop: CancellationToken,
) -> SocketStats {
    let (mut reader, mut writer) = ws;
    let mut stats = SocketStats::default();
    let period = plan.publish_every.unwrap_or(Duration::from_secs(3600));
    let mut tick = tokio::time::interval_at(plan.start, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut seq = 0u64;
    if plan.slow {
        tokio::select! {
            _ = tokio::time::sleep_until(plan.end) => {}
            _ = stop.cancelled() => return stats,
        }
    }
    'socket: loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick(), if plan.publish_every.is_some() && tokio::time::Instant::now() < plan.end => {
                seq += 1;
                let frame = message_frame(&plan, seq, clock.micros());
                if writer.text(frame.as_bytes()).await.is_err() {
                    break;
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
            more = reader.fill() => {
                if !matches!(more, Ok(true)) {
                    stats.close_code.get_or_insert(1006);
                    break;
                }
                let now = clock.micros();
                while let Some(frame) = reader.next_frame() {
                    match frame {
                        // Engine.IO ping: answer, or the peer drops the socket.
                        rawws::Frame::Text(b"2") => {
                            let _ = writer.text(b"3").await;
                        }
                        // Pusher's ping: answer, or the server drops the socket after its timeout.
                        rawws::Frame::Text(text) if text.starts_with(br#"{"event":"pusher:ping""#) => {
                            let _ = writer.text(br#"{"event":"pusher:pong","data":{}}"#).await;
                        }
                        rawws::Frame::Text(text) => stats.count(text, now),
                        rawws::Frame::Ping(payload) => {
                            let _ = writer.pong(payload).await;
                        }
                        rawws::Frame::Close(code) => {
                            stats.close_code = Some(code.unwrap_or(1005));
                            break 'socket;
                        }
                        rawws::Frame::Other => {}
                    }
                }
            }
        }
    }
    stats
}

pub(crate) async fn run(options: Options) -> anyhow::Result<Report> {
    if options.target == Target::Gateway {
        create_chats(&options).await.context("creating users and chats through the server API")?;
    }
    // Open every socket, 64 at a time.
    let mut sockets = Vec::with_capacity(options.sockets);
    let indexes: Vec<usize> = (0..options.sockets).collect();
    for chunk in indexes.chunks(64) {
        let opened = futures_util::future::join_all(chunk.iter().map(|i| open(&options, *i))).await;
        for ws in opened {
            sockets.push(ws.map_err(|e| anyhow::anyhow!("opening a socket: {e:#}"))?);
        }
    }
    eprintln!("loadgen: {} sockets open in {} groups", sockets.len(), options.groups);

    let clock = Clock(Instant::now());
    let start = tokio::time::Instant::now() + Duration::from_millis(500);
    let end = start + Duration::from_secs_f64(options.seconds);
    let per_group_period = Duration::from_secs_f64(options.groups as f64 / options.rate);
    let stop = CancellationToken::new();
    let sent: Vec<Arc<AtomicU64>> = (0..options.groups).map(|_| Arc::default()).collect();
    let mut tasks = Vec::new();
    let mut slow_sockets = 0;
    let mut members = vec![0u64; options.groups];
    for (i, ws) in sockets.into_iter().enumerate() {
        let group = i % options.groups;
        let publisher = i < options.groups;
        let slow = options.is_slow(i);
        if slow {
            slow_sockets += 1;
        } else {
            members[group] += 1;
        }
        let plan = Plan {
            target: options.target,
            group,
            channel: if options.target == Target::Sockudo { pusher_channel(&options, group) } else { String::new() },
            publish_every: publisher.then_some(per_group_period),
            slow,
            start,
            end,
        };
        tasks.push((slow, tokio::spawn(drive(ws, plan, clock, sent[group].clone(), stop.clone()))));
    }

    let all_pids: Vec<u32> = options.pids.iter().chain(&options.extra_pids).copied().collect();
    let pids: Vec<String> = all_pids.iter().map(u32::to_string).collect();
    let cpu_before: Vec<Option<f64>> = pids.iter().map(|p| cpu_secs(p)).collect();
    let own_before = cpu_secs("self").unwrap_or(0.0);
    let gateway = options.target == Target::Gateway;
    let slow_closes_before = if gateway { slow_closes(&options).await } else { 0 };
    let mut peak_rss = vec![0u64; pids.len()];
    // Sample RSS while the load runs, then give the last deliveries a moment.
    let drain_until = end + Duration::from_secs(2);
    while tokio::time::Instant::now() < drain_until {
        for (peak, pid) in peak_rss.iter_mut().zip(&all_pids) {
            *peak = (*peak).max(rss_kib(*pid));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cpu_after: Vec<Option<f64>> = pids.iter().map(|p| cpu_secs(p)).collect();
    let loadgen_cpu_secs = cpu_secs("self").unwrap_or(0.0) - own_before;
    // Before the sockets close (bench/cluster.sh counts each Redis master's commands up to here).
    eprintln!("loadgen: messages done");
    stop.cancel();
    let server_slow_closes = if gateway { Some(slow_closes(&options).await - slow_closes_before) } else { None };

    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut last_socket: HashMap<(u32, u32), u32> = HashMap::new();
    let (mut received, mut duplicates) = (0u64, 0u64);
    let (mut close_codes, mut slow_close_codes) = (HashMap::new(), HashMap::new());
    for (slow, task) in tasks {
        let stats = task.await?;
        if let Some(code) = stats.close_code {
            *(if slow { &mut slow_close_codes } else { &mut close_codes }).entry(code).or_default() += 1;
        }
        if slow {
            continue;
        }
        received += stats.received;
        duplicates += stats.duplicates;
        for (group, seq, micros) in stats.latencies {
            histogram.saturating_record(u64::from(micros).max(1));
            let last = last_socket.entry((group, seq)).or_insert(0);
            *last = (*last).max(micros);
        }
    }
    let messages_sent: u64 = sent.iter().map(|s| s.load(Ordering::Relaxed)).sum();
    // Pusher does not echo a client event to its sender.
    let echo = u64::from(options.target != Target::Sockudo);
    let expected: u64 = sent.iter().zip(&members).map(|(s, m)| s.load(Ordering::Relaxed) * (m - 1 + echo)).sum();
    let mut per_message = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for micros in last_socket.values() {
        per_message.saturating_record(u64::from(*micros).max(1));
    }
    let counted = options.pids.len();
    let processes: Vec<ProcessUse> = options
        .pids
        .iter()
        .chain(&options.extra_pids)
        .zip(cpu_before.iter().zip(&cpu_after))
        .zip(&peak_rss)
        .map(|((pid, (before, after)), peak)| ProcessUse {
            pid: *pid,
            cpu_secs: after.unwrap_or(0.0) - before.unwrap_or(0.0),
            peak_rss_kib: *peak,
        })
        .collect();
    let cpu_total: f64 = processes.iter().take(counted).map(|p| p.cpu_secs).sum();
    Ok(Report {
        target: match options.target {
            Target::Gateway => "gateway",
            Target::SocketIo => "socketio",
            Target::Floor => "floor",
            Target::Sockudo => "sockudo",
        },
        sockets: options.sockets,
        groups: options.groups,
        slow_sockets,
        messages_sent,
        deliveries_expected: expected,
        deliveries_received: received,
        lost: expected.saturating_sub(received),
        duplicates,
        close_codes,
        slow_close_codes,
        server_slow_closes,
        deliveries_per_sec: received as f64 / options.seconds,
        latency_ms: Percentiles::of(&histogram),
        last_socket_ms: Percentiles::of(&per_message),
        cpu_secs_per_100k_deliveries: if received > 0 { cpu_total * 100_000.0 / received as f64 } else { 0.0 },
        processes,
        loadgen_cpu_secs,
    })
}

impl Report {
    pub(crate) fn summary(&self) -> String {
        let codes =
            |codes: &HashMap<u16, u64>| codes.iter().map(|(c, n)| format!("{n}x{c}")).collect::<Vec<_>>().join(" ");
        let slow = if self.slow_sockets == 0 {
            String::new()
        } else {
            let by_server =
                self.server_slow_closes.map(|n| format!(", {n} closed 1013 by the nodes")).unwrap_or_default();
            format!(", {} slow sockets: closes [{}]{by_server}", self.slow_sockets, codes(&self.slow_close_codes))
        };
        format!(
            "{}: {} sockets/{} groups, sent {}, delivered {}/{} (lost {}, dup {}), {:.0} deliveries/s, latency ms p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}, last socket p50 {:.2} p99 {:.2}, CPU {:.3} s per 100k deliveries, closes [{}]{slow}, loadgen CPU {:.1} s",
            self.target,
            self.sockets,
            self.groups,
            self.messages_sent,
            self.deliveries_received,
            self.deliveries_expected,
            self.lost,
            self.duplicates,
            self.deliveries_per_sec,
            self.latency_ms.p50,
            self.latency_ms.p90,
            self.latency_ms.p99,
            self.latency_ms.p999,
            self.latency_ms.max,
            self.last_socket_ms.p50,
            self.last_socket_ms.p99,
            self.cpu_secs_per_100k_deliveries,
            codes(&self.close_codes),
            self.loadgen_cpu_secs,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use std::sync::Mutex;
    use tokio::sync::mpsc;
    use tokio_tungstenite::tungstenite::Message;

    /// What the little server below did wrong on purpose.
    #[derive(Default)]
    struct Faults {
        deliveries: AtomicU64,
        dropped: AtomicU64,
        doubled: AtomicU64,
    }

    type Rooms = Arc<Mutex<HashMap<String, Vec<mpsc::UnboundedSender<String>>>>>;

    /// A small in-process server speaking the Socket.IO target's frames: joins, and broadcasts
    /// each message to its room; it drops every 7th delivery and sends every 11th twice.
    async fn serve(listener: tokio::net::TcpListener, faults: Arc<Faults>) {
        let rooms: Rooms = Arc::default();
        while let Ok((stream, _)) = listener.accept().await {
            let (rooms, faults) = (rooms.clone(), faults.clone());
            tokio::spawn(async move {
                let Ok(ws) = tokio_tungstenite::accept_async(stream).await else { return };
                let (mut sink, mut stream) = ws.split();
                let (tx, mut rx) = mpsc::unbounded_channel::<String>();
                tokio::spawn(async move {
                    while let Some(frame) = rx.recv().await {
                        if sink.send(Message::text(frame)).await.is_err() {
                            return;
                        }
                    }
                });
                let _ = tx.send("0{}".into());
                while let Some(Ok(Message::Text(text))) = stream.next().await {
                    let text = text.as_str();
                    if text == "40" {
                        let _ = tx.send("40{}".into());
                    } else if let Some(room) = text.strip_prefix("42[\"join\",\"").and_then(|r| r.strip_suffix("\"]")) {
                        rooms.lock().unwrap().entry(room.to_owned()).or_default().push(tx.clone());
                        let _ = tx.send("42[\"joined\"]".into());
                    } else if text.starts_with("42[\"message\"") {
                        let message: serde_json::Value = serde_json::from_str(&text[2..]).unwrap();
                        let room = message[1]["room"].as_str().unwrap().to_owned();
                        let members = rooms.lock().unwrap().get(&room).cloned().unwrap_or_default();
                        for member in members {
                            let n = faults.deliveries.fetch_add(1, Ordering::Relaxed) + 1;
                            if n % 7 == 0 {
                                faults.dropped.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            let _ = member.send(text.to_owned());
                            if n % 11 == 0 {
                                faults.doubled.fetch_add(1, Ordering::Relaxed);
                                let _ = member.send(text.to_owned());
                            }
                        }
                    }
                }
            });
        }
    }

    #[tokio::test]
    async fn counts_loss_and_duplicates_against_a_faulty_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let faults = Arc::new(Faults::default());
        tokio::spawn(serve(listener, faults.clone()));
        let mut options = Options::parse(&["--target", "socketio", "--nodes", &addr].map(String::from)).unwrap();
        (options.sockets, options.groups, options.rate, options.seconds) = (30, 3, 60.0, 1.0);
        let report = run(options).await.unwrap();
        let (dropped, doubled) = (faults.dropped.load(Ordering::Relaxed), faults.doubled.load(Ordering::Relaxed));
        assert!(report.messages_sent >= 30, "{}", report.summary());
        assert_eq!(report.deliveries_expected, report.messages_sent * 10);
        assert_eq!(report.lost, dropped, "{}", report.summary());
        assert_eq!(report.duplicates, doubled, "{}", report.summary());
        assert_eq!(report.deliveries_received, report.deliveries_expected - dropped);
        assert!(report.latency_ms.p50 > 0.0 && report.latency_ms.p50 <= report.latency_ms.max);
    }

    #[test]
    fn counts_deliveries_duplicates_and_latency() {
        let mut stats = SocketStats::default();
        stats.count(br#"{"type":"new_message","data":{"content":"lg|3|1|1000"}}"#, 1500);
        stats.count(br#"42["message",{"content":"lg|3|2|2000"}]"#, 4000);
        stats.count(br#"{"data":{"content":"lg|3|2|2000"}}"#, 5000);
        stats.count(br#"{"type":"user_joined"}"#, 5000);
        stats.count(br#"{"content":"lg|3|x|1"}"#, 5000);
        assert_eq!((stats.received, stats.duplicates), (2, 1));
        assert_eq!(stats.latencies, vec![(3, 1, 500), (3, 2, 2000)]);
    }

    #[test]
    fn percentiles_come_from_the_histogram() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for micros in 1..=1000u64 {
            h.record(micros * 10).unwrap();
        }
        let p = Percentiles::of(&h);
        assert!((p.p50 - 5.0).abs() < 0.05, "{p:?}");
        assert!((p.p99 - 9.9).abs() < 0.05, "{p:?}");
        assert!((p.max - 10.0).abs() < 0.05, "{p:?}");
    }
}
