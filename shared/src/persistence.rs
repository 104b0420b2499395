//! Whether Redis keeps what it was given across a crash.
//!
//! Every accepted message is a job in Redis until the worker stores it. A Redis that writes no
//! append-only file and has no replica loses, when it crashes, every job the worker had not yet
//! stored: messages that clients saw live and that never reach the history. Both binaries check
//! at start (where `CONFIG GET` is allowed: managed Redis services often refuse it, and then
//! nothing is said) and say so loudly: a warning in the log, a gauge on `/metrics`, a line on the
//! console, a note from `check-config`.

use std::time::Duration;

use redis::{ConnectionAddr, IntoConnectionInfo};

use crate::connection::RedisTarget;

/// How long the check waits for each Redis.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// What the check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Persistence {
    /// Every master writes an append-only file or has a replica.
    Kept,
    /// These masters (addresses) have neither: a crash loses the jobs not yet stored.
    AtRisk(Vec<String>),
    /// Redis did not say (`CONFIG GET` refused, or unreachable); the reason.
    Unknown(String),
}

impl Persistence {
    /// One line for `check-config`.
    pub fn note(&self) -> String {
        match self {
            Persistence::Kept => "Redis persistence: every master writes an append-only file or has a replica".into(),
            Persistence::AtRisk(_) => format!("warning: {}", self.warning().unwrap_or_default()),
            Persistence::Unknown(reason) => format!("Redis persistence: not known ({reason})"),
        }
    }

    /// The warning to give, if any.
    pub fn warning(&self) -> Option<String> {
        match self {
            Persistence::AtRisk(masters) => Some(format!(
                "Redis {} runs without an append-only file (appendonly no) and without a replica: if it crashes, \
                 the jobs the worker has not yet stored are lost, and messages clients saw live never reach the \
                 history. Turn on appendonly (docker-compose.yml does), or give each master a replica",
                masters.join(", ")
            )),
            _ => None,
        }
    }
}

/// `check`, and says it in the log: the warning when Redis would lose jobs in a crash, an info
/// line when Redis did not say. Returns the warning (for the caller's gauge and console).
pub async fn check_and_log(target: &RedisTarget) -> Option<String> {
    let found = check(target).await;
    if let Persistence::Unknown(reason) = &found {
        tracing::info!(%reason, "Redis's persistence settings could not be read (CONFIG GET refused?)");
    }
    let warning = found.warning();
    if let Some(warning) = &warning {
        tracing::warn!("{warning}");
    }
    warning
}

/// Reads the persistence of every master of `target`.
pub async fn check(target: &RedisTarget) -> Persistence {
    match tokio::time::timeout(CHECK_TIMEOUT * 4, check_all(target)).await {
        Ok(Ok(masters)) => {
            let at_risk: Vec<String> =
                masters.into_iter().filter(|m| !m.append_only && m.replicas == 0).map(|m| m.address).collect();
            if at_risk.is_empty() {
                Persistence::Kept
            } else {
                Persistence::AtRisk(at_risk)
            }
        }
        Ok(Err(e)) => Persistence::Unknown(e.to_string()),
        Err(_) => Persistence::Unknown("Redis did not answer in time".into()),
    }
}

struct Master {
    address: String,
    append_only: bool,
    replicas: usize,
}

async fn check_all(target: &RedisTarget) -> redis::RedisResult<Vec<Master>> {
    match target {
        RedisTarget::Single(url) => {
            let info = url.as_str().into_connection_info()?;
            let address = address_of(info.addr());
            let mut conn = connect(info).await?;
            let replication: String = redis::cmd("INFO").arg("replication").query_async(&mut conn).await?;
            let replicas = field(&replication, "connected_slaves").and_then(|n| n.parse().ok()).unwrap_or(0);
            Ok(vec![Master { address, append_only: append_only(&mut conn).await?, replicas }])
        }
        RedisTarget::Cluster(seeds) => {
            let mut last_error = None;
            for seed in seeds {
                match cluster_masters(seed).await {
                    Ok(masters) => return Ok(masters),
                    Err(e) => last_error = Some(e),
                }
            }
            Err(last_error.unwrap_or_else(|| redis::RedisError::from((redis::ErrorKind::Client, "no seed node"))))
        }
    }
}

/// The masters of the cluster `seed` belongs to (`CLUSTER NODES`), each asked for its own
/// `appendonly`, with the credentials of the seed's URL.
async fn cluster_masters(seed: &str) -> redis::RedisResult<Vec<Master>> {
    let info = seed.into_connection_info()?;
    let nodes: String = redis::cmd("CLUSTER").arg("NODES").query_async(&mut connect(info.clone()).await?).await?;
    // <id> <ip:port@cport[,hostname]> <flags> <master id or -> ...
    let lines: Vec<Vec<&str>> =
        nodes.lines().map(|l| l.split_whitespace().collect()).filter(|f: &Vec<&str>| f.len() > 3).collect();
    let is = |fields: &Vec<&str>, flag: &str| fields[2].split(',').any(|f| f == flag);
    let mut masters = Vec::new();
    for master in lines.iter().filter(|f| is(f, "master") && !is(f, "fail")) {
        let replicas = lines.iter().filter(|f| is(f, "slave") && !is(f, "fail") && f[3] == master[0]).count();
        let host_port = master[1].split('@').next().unwrap_or_default();
        let Some((host, port)) = host_port.rsplit_once(':') else { continue };
        let Ok(port) = port.parse::<u16>() else { continue };
        let addr = match info.addr() {
            ConnectionAddr::TcpTls { insecure, tls_params, .. } => ConnectionAddr::TcpTls {
                host: host.to_owned(),
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host.to_owned(), port),
        };
        let mut conn = connect(info.clone().set_addr(addr)).await?;
        masters.push(Master { address: host_port.to_owned(), append_only: append_only(&mut conn).await?, replicas });
    }
    Ok(masters)
}

async fn connect(info: redis::ConnectionInfo) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(info)?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CHECK_TIMEOUT))
        .set_response_timeout(Some(CHECK_TIMEOUT));
    client.get_multiplexed_async_connection_with_config(&config).await
}

async fn append_only(conn: &mut redis::aio::MultiplexedConnection) -> redis::RedisResult<bool> {
    let reply: Vec<String> = redis::cmd("CONFIG").arg("GET").arg("appendonly").query_async(conn).await?;
    Ok(reply.get(1).is_some_and(|v| v == "yes"))
}

fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|line| line.trim().strip_prefix(name)?.strip_prefix(':'))
}

fn address_of(addr: &ConnectionAddr) -> String {
    match addr {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => format!("{host}:{port}"),
        other => other.to_string(),
    }
}
