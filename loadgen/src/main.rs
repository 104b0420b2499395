//! The load generator behind the benchmarks (`bench/`). A `REDIS_URL` argument is a `redis://`
//! URL, or `cluster:` and a Redis Cluster's seed nodes (`cluster:127.0.0.1:7000,127.0.0.1:7001`).
//!
//! * `loadgen idle URL COUNT`: opens COUNT WebSockets to URL, prints `connected N`, then holds
//!   them open until stdin closes (bench/idle-memory.sh).
//! * `loadgen persist REDIS_URL DATABASE_URL MESSAGES WORKERS RATE SECONDS`: fills the jobs
//!   stream with MESSAGES session messages, lets WORKERS in-process workers persist them and
//!   reports messages persisted per second; then a steady load of RATE messages per second for
//!   SECONDS, reporting the worker's lag (bench/worker-throughput.sh).
//! * `loadgen latency REDIS_URL DATABASE_URL RATE SECONDS [PREFIX]`: publishes RATE session
//!   messages per second for SECONDS the way a gateway does (live publish and job in one atomic script),
//!   one at a time, while a worker process persists them; polls the database every 5 ms and
//!   reports publish-to-row latency (p50, p99, max) (bench/persist-latency.sh).
//! * `loadgen fanout --target gateway|socketio|floor|sockudo --nodes HOST:PORT,... [--sockets N] [--groups G]
//!   [--rate MSG_PER_SEC] [--seconds S] [--slow SHARE] [--pids PID,...] [--api-key K --jwt-secret S]
//!   [--app-key K --app-secret S]`:
//!   the fan-out benchmark (`fanout`): prints its report as one JSON line, then a summary line
//!   (bench/fanout.sh, bench/compare.sh).
//! * `loadgen storm [--within SECS] [--redis URL] --nodes ... --sockets N --groups G --api-key K
//!   --jwt-secret S`: a reconnect storm with `?since=` (`storm`, bench/fanout.sh storm).
//! * `loadgen receive-rate [SOCKETS] [FRAMES_PER_SOCKET]`: the fan-out receive path measured
//!   against itself on one thread: frames per CPU-second (`receive_rate`, bench/fanout.sh).

mod fanout;
mod rawws;
mod receive_rate;
mod storm;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;
use shared::broker::RedisBroker;
use shared::connection::{Commands, RedisTarget};
use shared::event::SessionMessage;
use shared::ids::{MessageId, SessionId, UserId};
use shared::jobs::Job;
use shared::keys::{Keys, BUCKETS};
use shared::store::{Store, UserRecord};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("idle") if args.len() == 3 => idle(&args[1], args[2].parse()?).await,
        Some("persist") if args.len() == 7 => {
            persist(&args[1], &args[2], args[3].parse()?, args[4].parse()?, args[5].parse()?, args[6].parse()?).await
        }
        Some("fanout") => {
            let report = fanout::run(fanout::Options::parse(&args[1..])?).await?;
            println!("{}", serde_json::to_string(&report)?);
            println!("{}", report.summary());
            Ok(())
        }
        Some("storm") => {
            let report = storm::run(&args[1..]).await?;
            println!("{}", serde_json::to_string(&report)?);
            println!("{}", report.summary());
            Ok(())
        }
        Some("receive-rate") if args.len() <= 3 => {
            let sockets = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(8);
            let frames = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(500_000);
            let report = tokio::task::spawn_blocking(move || receive_rate::run(sockets, frames)).await??;
            println!("{}", serde_json::to_string(&report)?);
            println!("{}", report.summary());
            Ok(())
        }
        Some("latency") if args.len() == 5 || args.len() == 6 => {
            let prefix = args.get(5).map(String::as_str).unwrap_or("rt:");
            latency(&args[1], &args[2], args[3].parse()?, args[4].parse()?, prefix).await
        }
        _ => anyhow::bail!(
            "usage: loadgen idle URL COUNT | loadgen persist REDIS_URL DATABASE_URL MESSAGES WORKERS RATE SECONDS \
             | loadgen latency REDIS_URL DATABASE_URL RATE SECONDS [PREFIX] | loadgen fanout --target ... (see fanout.rs) \
             | loadgen receive-rate [SOCKETS] [FRAMES_PER_SOCKET] | loadgen storm --within SECS [--redis URL] ... (see storm.rs)"
        ),
    }
}

async fn idle(url: &str, count: usize) -> anyhow::Result<()> {
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        let (_write, read) = ws.split();
        // Reading keeps the socket healthy (pings answered); the frames themselves are ignored.
        held.push(tokio::spawn(read.for_each(|_| async {})));
    }
    println!("connected {count}");
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    Ok(())
}

const USERS: usize = 200;
const PREFIX: &str = "bench:";

/// The Redis of a `REDIS` argument: a URL, or `cluster:` and the seed nodes
/// (`cluster:127.0.0.1:7000,127.0.0.1:7001`).
fn redis_target(arg: &str) -> anyhow::Result<RedisTarget> {
    match arg.strip_prefix("cluster:") {
        Some(nodes) => RedisTarget::cluster_from_list(nodes).context("cluster: names no node"),
        None => Ok(RedisTarget::Single(arg.to_owned())),
    }
}

/// Appends `count` session-message jobs, spread over the buckets' streams, in pipelines of up to
/// 1000 per bucket (one round trip each).
async fn fill(commands: &Commands, sessions: &[(SessionId, UserId)], count: usize) -> anyhow::Result<()> {
    let keys = Keys::new(PREFIX);
    let mut sent = 0;
    while sent < count {
        let mut pipes: Vec<redis::Pipeline> = (0..BUCKETS).map(|_| redis::pipe()).collect();
        for i in sent..(sent + 1000 * BUCKETS).min(count) {
            let (session, sender) = &sessions[i % sessions.len()];
            let job = Job::SessionMessage(SessionMessage {
                message_id: MessageId::new(),
                session_id: *session,
                sender_id: sender.clone(),
                sender_name: sender.to_string(),
                content: format!("benchmark message {i}"),
                created_at: shared::time::now(),
            });
            pipes[i % BUCKETS].xadd(keys.jobs_stream(i % BUCKETS), "*", &[("job", job.encode().as_ref())]).ignore();
        }
        for pipe in pipes {
            let _: () = pipe.query_async(&mut commands.conn().await?).await?;
        }
        sent = (sent + 1000 * BUCKETS).min(count);
    }
    Ok(())
}

/// Jobs not yet persisted, over every bucket's stream.
async fn backlog(commands: &Commands) -> anyhow::Result<usize> {
    let keys = Keys::new(PREFIX);
    let mut total = 0;
    for bucket in 0..BUCKETS {
        let len: usize =
            redis::cmd("XLEN").arg(keys.jobs_stream(bucket)).query_async(&mut commands.conn().await?).await?;
        total += len;
    }
    Ok(total)
}

async fn persist(
    redis_url: &str,
    db_url: &str,
    messages: usize,
    workers: usize,
    rate: usize,
    seconds: u64,
) -> anyhow::Result<()> {
    let store = Store::connect(db_url, 16).await.context("database")?;
    let sessions = bench_sessions(&store).await?;
    let target = redis_target(redis_url)?;
    let commands = Commands::new(&target)?;

    // Phase 1: a full stream, drained as fast as the workers go.
    fill(&commands, &sessions, messages).await?;
    let stop = CancellationToken::new();
    let started = Instant::now();
    for w in 0..workers {
        let broker = Arc::new(RedisBroker::new(&target, PREFIX)?);
        let settings = worker::WorkerSettings {
            consumer: format!("bench-{w}"),
            batch_size: 1024,
            claim_idle: Duration::from_secs(60),
            block: Duration::from_millis(100),
            after_commit: None,
            after_award_publish: None,
        };
        let mut worker = worker::Worker::new(broker, store.clone(), settings, worker::Rules::default_set());
        let stopped = stop.clone();
        tokio::spawn(async move {
            while !stopped.is_cancelled() {
                if let Err(e) = worker.process_batch().await {
                    eprintln!("worker step failed: {e}");
                }
            }
        });
    }
    while backlog(&commands).await? > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "burst: {messages} messages persisted by {workers} workers in {elapsed:.2} s: {:.0} messages/s",
        messages as f64 / elapsed
    );

    // Phase 2: a steady load, RATE/10 messages every 100 ms. The backlog just before each tick's
    // messages are added is what the workers have not persisted 100 ms later: their lag.
    let per_tick = rate / 10;
    let mut samples = Vec::new();
    let ticks = seconds * 10;
    let mut interval = tokio::time::interval(Duration::from_millis(100));
    for _ in 0..ticks {
        interval.tick().await;
        samples.push(backlog(&commands).await?);
        fill(&commands, &sessions, per_tick).await?;
    }
    while backlog(&commands).await? > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    samples.sort_unstable();
    let p50 = samples[samples.len() / 2];
    let p99 = samples[samples.len() * 99 / 100];
    let max = *samples.last().unwrap_or(&0);
    let ms = |backlog: usize| backlog as f64 * 1000.0 / rate as f64;
    println!(
        "steady: {rate} messages/s for {seconds} s: unpersisted 100 ms after each tick: p50 {p50} ({:.0} ms of load), p99 {p99} ({:.0} ms), max {max} ({:.0} ms)",
        ms(p50),
        ms(p99),
        ms(max)
    );
    Ok(())
}

/// Users and sessions for the benchmarks: one session per user.
async fn bench_sessions(store: &Store) -> anyhow::Result<Vec<(SessionId, UserId)>> {
    let mut sessions = Vec::new();
    for u in 0..USERS {
        let user = UserId::parse(&format!("bench-user-{u}"))?;
        let record = UserRecord {
            id: user.clone(),
            username: user.to_string(),
            email: None,
            display_name: None,
            is_active: true,
            created_at: None,
        };
        store.upsert_user(&record).await?;
        let session = SessionId::from(uuid::Uuid::new_v4());
        store.upsert_session(&session, &user, &UserId::parse("bench-peer")?).await?;
        sessions.push((session, user));
    }
    Ok(sessions)
}

/// Publish-to-row latency at a steady rate, against whatever worker consumes `prefix`'s stream.
async fn latency(redis_url: &str, db_url: &str, rate: u64, seconds: u64, prefix: &str) -> anyhow::Result<()> {
    use shared::broker::PubSub;
    use shared::event::{Envelope, Event, Group};
    use std::collections::HashMap;

    let store = Store::connect(db_url, 4).await.context("database")?;
    let Store::Postgres(pool) = store.clone() else { anyhow::bail!("latency needs a postgres:// DATABASE_URL") };
    let sessions = bench_sessions(&store).await?;
    let broker = RedisBroker::new(&redis_target(redis_url)?, prefix)?;
    let total = rate * seconds;
    let sent: Arc<std::sync::Mutex<HashMap<uuid::Uuid, Instant>>> = Arc::default();
    let done = CancellationToken::new();

    // The poller: which of the messages sent so far have a row, and since when.
    let poller = {
        let (sent, done, pool) = (sent.clone(), done.clone(), pool.clone());
        tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(total as usize);
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            while latencies.len() < total as usize {
                tick.tick().await;
                let waiting: Vec<uuid::Uuid> = sent.lock().unwrap().keys().copied().collect();
                if waiting.is_empty() {
                    if done.is_cancelled() && sent.lock().unwrap().is_empty() {
                        break;
                    }
                    continue;
                }
                let found: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM session_messages WHERE id = ANY($1)")
                    .bind(&waiting)
                    .fetch_all(&pool)
                    .await
                    .unwrap_or_default();
                let now = Instant::now();
                let mut sent = sent.lock().unwrap();
                for id in found {
                    if let Some(at) = sent.remove(&id) {
                        latencies.push(now - at);
                    }
                }
            }
            latencies
        })
    };

    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    for i in 0..total {
        tick.tick().await;
        let (session, sender) = &sessions[i as usize % sessions.len()];
        let message = SessionMessage {
            message_id: MessageId::new(),
            session_id: *session,
            sender_id: sender.clone(),
            sender_name: sender.to_string(),
            content: format!("latency message {i}"),
            created_at: shared::time::now(),
        };
        let id = message.message_id.as_uuid();
        let job = Job::SessionMessage(message.clone()).encode();
        let payload = Envelope::to_all(Event::SessionMessage(message)).encode();
        sent.lock().unwrap().insert(id, Instant::now());
        broker.publish_and_enqueue(&Group::session(session), payload, job).await?;
    }
    let sending = started.elapsed().as_secs_f64();
    done.cancel();
    let mut latencies =
        tokio::time::timeout(Duration::from_secs(60), poller).await.context("rows never appeared")??;
    latencies.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: usize| latencies[(latencies.len() * q / 100).min(latencies.len() - 1)];
    println!(
        "latency: {} messages at {:.0}/s for {seconds} s, publish to row (5 ms polls): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        total as f64 / sending,
        ms(at(50)),
        ms(at(99)),
        ms(*latencies.last().unwrap_or(&Duration::ZERO)),
    );
    Ok(())
}
