//! Typed configuration from the environment: the run interface of DESIGN.md. Every setting is read
//! here and nowhere else; a bad value is refused at start with the variable's name.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::auth::JwtKey;
pub use crate::connection::RedisTarget;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is required in cluster mode (REDIS_URL or REDIS_CLUSTER_NODES is set)")]
    Missing { name: &'static str },
    #[error("set REDIS_URL (one Redis) or REDIS_CLUSTER_NODES (a Redis Cluster), not both")]
    BothRedis,
    #[error("{name} is required")]
    Required { name: &'static str },
    #[error("{name}={value:?} is not valid: {reason}")]
    Invalid { name: &'static str, value: String, reason: String },
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Per-socket and per-user limits of PROTOCOL.md ("limits", "heartbeat", "frames").
#[derive(Debug, Clone)]
pub struct Limits {
    /// Token bucket refill, messages per second (`GATEWAY_RATE_PER_SEC`).
    pub rate_per_sec: f64,
    /// Token bucket size (`GATEWAY_RATE_BURST`).
    pub rate_burst: f64,
    /// Largest accepted client frame (`GATEWAY_MAX_FRAME_BYTES`); larger closes with 1009.
    pub max_frame_bytes: usize,
    /// Outbound queue bound in frames (`GATEWAY_OUTBOX_FRAMES`); full closes with 1013.
    pub outbox_frames: usize,
    /// Outbound queue bound in bytes (`GATEWAY_OUTBOX_BYTES`); full closes with 1013.
    pub outbox_bytes: usize,
    /// The kernel's send buffer of each accepted connection (`GATEWAY_SEND_BUFFER_BYTES`, default
    /// 64 KiB, which Linux doubles; 0: the kernel's autotuning, which lets a client that stopped
    /// reading hold up to 4 MiB there before the outbox, its metric and its 1013 see anything).
    pub send_buffer_bytes: usize,
    /// Open sockets per user on one node (`GATEWAY_MAX_SOCKETS_PER_USER`).
    pub max_sockets_per_user: usize,
    /// WebSocket ping period (`GATEWAY_PING_SECS`).
    pub ping_interval: Duration,
    /// A peer silent this long is closed (`GATEWAY_IDLE_SECS`).
    pub idle_timeout: Duration,
    /// How long a close handshake may take before the TCP connection is dropped.
    pub close_grace: Duration,
    /// A connection that has not sent a complete request head (the upgrade request, for a
    /// socket) this long after it opened is closed (`GATEWAY_UPGRADE_TIMEOUT_SECS`).
    pub upgrade_timeout: Duration,
    /// How often a node proves that its pub/sub connection delivers, and how long it waits for
    /// the proof (`GATEWAY_CANARY_SECS`).
    pub canary_interval: Duration,
    /// Open connections (sockets included) from one IP address; more are refused at accept
    /// (`GATEWAY_MAX_CONNECTIONS_PER_IP`, 0 for no limit). Behind a load balancer every
    /// connection comes from its address: raise or disable it there.
    pub max_connections_per_ip: usize,
    /// Socket upgrades per second from one IP address, with a burst of twice that; more are
    /// answered 429 (`GATEWAY_UPGRADES_PER_IP_PER_SEC`, 0 for no limit).
    pub upgrades_per_ip_per_sec: u32,
    /// A draining node closes its sockets (1012) at random moments spread over this window, so
    /// that a restart is not a reconnect storm on the others (`GATEWAY_DRAIN_WINDOW_MS`).
    pub drain_window: Duration,
    /// A message resent with the same `client_message_id` by the same user within this window is
    /// answered as the first send and not published again (`GATEWAY_RESEND_WINDOW_SECS`).
    pub resend_window: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            rate_per_sec: 20.0,
            rate_burst: 40.0,
            max_frame_bytes: 64 * 1024,
            outbox_frames: 1024,
            outbox_bytes: 1024 * 1024,
            send_buffer_bytes: 64 * 1024,
            max_sockets_per_user: 16,
            ping_interval: Duration::from_secs(25),
            idle_timeout: Duration::from_secs(60),
            close_grace: Duration::from_secs(5),
            upgrade_timeout: Duration::from_secs(10),
            canary_interval: Duration::from_secs(5),
            max_connections_per_ip: 4096,
            upgrades_per_ip_per_sec: 200,
            drain_window: Duration::from_secs(5),
            resend_window: Duration::from_secs(24 * 3600),
        }
    }
}

/// How the processes log (`LOG_FORMAT`): `text` for people (the default), `json` for log
/// collectors (one JSON object per line, with the span fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    pub fn from_env() -> Result<Self, ConfigError> {
        match var("LOG_FORMAT").map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("text") => Ok(Self::Text),
            Some("json") => Ok(Self::Json),
            Some(other) => {
                Err(ConfigError::Invalid { name: "LOG_FORMAT", value: other.to_owned(), reason: "text or json".into() })
            }
        }
    }
}

/// Each group's window of recent publications (`crate::broker`): what a node that lost its
/// pub/sub connection, or a client that resumes, reads back what it missed from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupWindow {
    /// Publications kept per group, at least (`GATEWAY_GROUP_WINDOW`, 0 keeps none).
    pub len: usize,
    /// A group's window is dropped this long after its last publication (`GATEWAY_GROUP_WINDOW_SECS`).
    pub ttl: Duration,
}

impl Default for GroupWindow {
    fn default() -> Self {
        Self { len: 256, ttl: Duration::from_secs(300) }
    }
}

impl GroupWindow {
    pub fn from_env() -> Result<Self, ConfigError> {
        let d = Self::default();
        Ok(Self {
            len: parsed("GATEWAY_GROUP_WINDOW", d.len)?,
            ttl: Duration::from_secs(parsed("GATEWAY_GROUP_WINDOW_SECS", d.ttl.as_secs())?.max(1)),
        })
    }
}

/// Everything a gateway node needs. `Debug` prints no secret: the API key, the JWT key and the
/// URLs' passwords are redacted.
#[derive(Clone)]
pub struct GatewayConfig {
    pub bind: SocketAddr,
    /// `None` is embedded mode: in-process broker and worker.
    pub redis: Option<RedisTarget>,
    /// Replicas that must have each publication before its sender hears it went out
    /// (`GATEWAY_REDIS_REPLICA_ACKS`).
    pub replica_acks: u32,
    pub database_url: String,
    pub jwt: JwtKey,
    pub api_key: String,
    pub anonymous_personal: bool,
    pub limits: Limits,
    /// Prefix of every Redis key and channel this deployment uses (`GATEWAY_REDIS_PREFIX`).
    pub redis_prefix: String,
    pub window: GroupWindow,
    /// Embedded mode only: where the SQLite file and generated secrets live.
    pub data_dir: Option<PathBuf>,
    /// Names of settings that were generated at this start (embedded mode), to be printed.
    pub generated: Vec<&'static str>,
}

/// Everything a worker process needs. `Debug` redacts the URLs' passwords.
#[derive(Clone)]
pub struct WorkerConfig {
    pub redis: RedisTarget,
    /// As the gateway's: the awards it publishes wait for this many replicas.
    pub replica_acks: u32,
    pub database_url: String,
    pub redis_prefix: String,
    /// The groups' windows, for the events the worker publishes (same settings as the gateway's).
    pub window: GroupWindow,
    /// Jobs taken per read (`WORKER_BATCH`).
    pub batch_size: usize,
    /// Pending jobs idle this long belong to a dead consumer and are claimed (`WORKER_CLAIM_IDLE_MS`).
    pub claim_idle: Duration,
    /// This consumer's name in the group (`WORKER_CONSUMER`); unique per process by default.
    pub consumer: String,
    /// Gamification rules file (`WORKER_RULES`); the compiled-in default when unset.
    pub rules_path: Option<String>,
    /// Where the worker serves `/metrics` and `/healthz` (`WORKER_METRICS_BIND`).
    pub metrics_bind: SocketAddr,
}

/// `url` with the password of its user part replaced by `***` (`redis://:***@host`), for
/// printing; a URL without one is returned as it is.
pub fn redacted_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else { return url.to_owned() };
    let user = rest[..at].split_once(':').map_or(&rest[..at], |(user, _)| user);
    format!("{scheme}://{user}:***@{}", &rest[at + 1..])
}

impl std::fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("bind", &self.bind)
            .field("redis", &self.redis)
            .field("replica_acks", &self.replica_acks)
            .field("database_url", &redacted_url(&self.database_url))
            .field("jwt", &self.jwt)
            .field("api_key", &"<redacted>")
            .field("anonymous_personal", &self.anonymous_personal)
            .field("limits", &self.limits)
            .field("redis_prefix", &self.redis_prefix)
            .field("window", &self.window)
            .field("data_dir", &self.data_dir)
            .field("generated", &self.generated)
            .finish()
    }
}

impl std::fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("redis", &self.redis)
            .field("replica_acks", &self.replica_acks)
            .field("database_url", &redacted_url(&self.database_url))
            .field("redis_prefix", &self.redis_prefix)
            .field("window", &self.window)
            .field("batch_size", &self.batch_size)
            .field("claim_idle", &self.claim_idle)
            .field("consumer", &self.consumer)
            .field("rules_path", &self.rules_path)
            .field("metrics_bind", &self.metrics_bind)
            .finish()
    }
}

pub const DEFAULT_REDIS_PREFIX: &str = "rt:";

/// Which binary reads a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadBy {
    Gateway,
    Worker,
    Both,
}

/// One setting of the run interface, for `--help` (the README's table says the same).
pub struct Setting {
    pub name: &'static str,
    pub read_by: ReadBy,
    pub default: &'static str,
    pub meaning: &'static str,
}

/// Every setting either binary reads, in the README's order. A test keeps it complete.
pub const SETTINGS: &[Setting] = &[
    Setting { name: "GATEWAY_BIND", read_by: ReadBy::Gateway, default: "0.0.0.0:8000", meaning: "listen address" },
    Setting {
        name: "REDIS_URL",
        read_by: ReadBy::Both,
        default: "unset: embedded mode (the worker requires it)",
        meaning: "one Redis; set for cluster mode",
    },
    Setting {
        name: "REDIS_CLUSTER_NODES",
        read_by: ReadBy::Both,
        default: "unset",
        meaning: "a Redis Cluster instead: seed nodes, host:port or redis:// URLs, comma-separated",
    },
    Setting {
        name: "GATEWAY_REDIS_REPLICA_ACKS",
        read_by: ReadBy::Both,
        default: "0",
        meaning: "replicas that must have a publication (WAIT) before it counts as sent",
    },
    Setting {
        name: "DATABASE_URL",
        read_by: ReadBy::Both,
        default: "embedded: sqlite in GATEWAY_DATA_DIR",
        meaning: "postgres://... or sqlite://...",
    },
    Setting {
        name: "GATEWAY_DATA_DIR",
        read_by: ReadBy::Gateway,
        default: "~/.local/share/rtgate",
        meaning: "embedded mode's folder: SQLite file, generated secrets",
    },
    Setting {
        name: "JWT_SECRET",
        read_by: ReadBy::Gateway,
        default: "embedded: generated once",
        meaning: "HS256 secret of the clients' tokens",
    },
    Setting {
        name: "JWT_PUBLIC_KEY_FILE",
        read_by: ReadBy::Gateway,
        default: "unset",
        meaning: "RS256/ES256 public key (PEM) instead of JWT_SECRET",
    },
    Setting {
        name: "JWT_ALGORITHM",
        read_by: ReadBy::Gateway,
        default: "HS256 with a secret, RS256 with a key file",
        meaning: "pinned, never read from a token",
    },
    Setting {
        name: "GATEWAY_API_KEY",
        read_by: ReadBy::Gateway,
        default: "embedded: generated once",
        meaning: "bearer key of the server API",
    },
    Setting {
        name: "GATEWAY_ANONYMOUS_PERSONAL",
        read_by: ReadBy::Gateway,
        default: "false",
        meaning: "allow the Diary guide's tokenless personal socket",
    },
    Setting {
        name: "GATEWAY_RATE_PER_SEC",
        read_by: ReadBy::Gateway,
        default: "20",
        meaning: "per-socket message rate",
    },
    Setting { name: "GATEWAY_RATE_BURST", read_by: ReadBy::Gateway, default: "40", meaning: "per-socket burst" },
    Setting {
        name: "GATEWAY_MAX_FRAME_BYTES",
        read_by: ReadBy::Gateway,
        default: "65536",
        meaning: "largest client frame; larger closes 1009",
    },
    Setting {
        name: "GATEWAY_OUTBOX_FRAMES",
        read_by: ReadBy::Gateway,
        default: "1024",
        meaning: "per-socket outbound queue in frames; full closes 1013",
    },
    Setting {
        name: "GATEWAY_OUTBOX_BYTES",
        read_by: ReadBy::Gateway,
        default: "1048576",
        meaning: "per-socket outbound queue in bytes; full closes 1013",
    },
    Setting {
        name: "GATEWAY_SEND_BUFFER_BYTES",
        read_by: ReadBy::Gateway,
        default: "65536",
        meaning: "per-connection kernel send buffer (0: the kernel's autotuning, up to 4 MiB); bounds what a stalled client holds before its outbox fills",
    },
    Setting {
        name: "GATEWAY_MAX_SOCKETS_PER_USER",
        read_by: ReadBy::Gateway,
        default: "16",
        meaning: "open sockets per user, cluster-wide",
    },
    Setting { name: "GATEWAY_PING_SECS", read_by: ReadBy::Gateway, default: "25", meaning: "WebSocket ping period" },
    Setting {
        name: "GATEWAY_IDLE_SECS",
        read_by: ReadBy::Gateway,
        default: "60",
        meaning: "silence before a socket is closed",
    },
    Setting {
        name: "GATEWAY_CANARY_SECS",
        read_by: ReadBy::Gateway,
        default: "5",
        meaning: "pub/sub canary period and deadline",
    },
    Setting {
        name: "GATEWAY_MAX_CONNECTIONS_PER_IP",
        read_by: ReadBy::Gateway,
        default: "4096 (0: no limit)",
        meaning: "open connections per client address",
    },
    Setting {
        name: "GATEWAY_UPGRADES_PER_IP_PER_SEC",
        read_by: ReadBy::Gateway,
        default: "200 (0: no limit)",
        meaning: "socket upgrades per second per client address",
    },
    Setting {
        name: "GATEWAY_DRAIN_WINDOW_MS",
        read_by: ReadBy::Gateway,
        default: "5000",
        meaning: "a draining node's 1012 closes are spread over this window",
    },
    Setting {
        name: "GATEWAY_RESEND_WINDOW_SECS",
        read_by: ReadBy::Gateway,
        default: "86400",
        meaning: "a resend with the same client_message_id within it is answered as the first",
    },
    Setting {
        name: "GATEWAY_UPGRADE_TIMEOUT_SECS",
        read_by: ReadBy::Gateway,
        default: "10",
        meaning: "time to send a complete request head",
    },
    Setting {
        name: "GATEWAY_GROUP_WINDOW",
        read_by: ReadBy::Both,
        default: "256",
        meaning: "publications kept per group for refills",
    },
    Setting {
        name: "GATEWAY_GROUP_WINDOW_SECS",
        read_by: ReadBy::Both,
        default: "300",
        meaning: "a group's window lives this long after its last publication",
    },
    Setting {
        name: "GATEWAY_REDIS_PREFIX",
        read_by: ReadBy::Both,
        default: "rt:",
        meaning: "prefix of every Redis key and channel",
    },
    Setting { name: "WORKER_BATCH", read_by: ReadBy::Worker, default: "512", meaning: "jobs per batch" },
    Setting {
        name: "WORKER_CLAIM_IDLE_MS",
        read_by: ReadBy::Worker,
        default: "15000",
        meaning: "pending jobs idle this long are taken from a dead consumer",
    },
    Setting {
        name: "WORKER_CONSUMER",
        read_by: ReadBy::Worker,
        default: "host-pid-random",
        meaning: "this consumer's name in the group",
    },
    Setting {
        name: "WORKER_RULES",
        read_by: ReadBy::Worker,
        default: "compiled in",
        meaning: "gamification rules file (JSON)",
    },
    Setting {
        name: "WORKER_METRICS_BIND",
        read_by: ReadBy::Worker,
        default: "0.0.0.0:9100",
        meaning: "where the worker serves /metrics and /healthz",
    },
    Setting { name: "RUST_LOG", read_by: ReadBy::Both, default: "info", meaning: "tracing filter" },
    Setting {
        name: "LOG_FORMAT",
        read_by: ReadBy::Both,
        default: "text",
        meaning: "text, or json (one object per line)",
    },
    Setting {
        name: "OTEL_EXPORTER_OTLP_ENDPOINT",
        read_by: ReadBy::Both,
        default: "(unset: no tracing)",
        meaning: "OpenTelemetry collector, OTLP over HTTP/protobuf (http://collector:4318); set, traces are on",
    },
    Setting {
        name: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        read_by: ReadBy::Both,
        default: "(unset)",
        meaning: "the traces endpoint itself (http://collector:4318/v1/traces), instead of the one above",
    },
    Setting {
        name: "OTEL_TRACES_SAMPLER",
        read_by: ReadBy::Both,
        default: "parentbased_traceidratio",
        meaning: "which messages are traced (always_on, always_off, traceidratio, parentbased_*)",
    },
    Setting {
        name: "OTEL_TRACES_SAMPLER_ARG",
        read_by: ReadBy::Both,
        default: "0.01",
        meaning: "the sampler's ratio",
    },
    Setting {
        name: "OTEL_SERVICE_NAME",
        read_by: ReadBy::Both,
        default: "gateway / worker",
        meaning: "the service name on the spans",
    },
    Setting {
        name: "OTEL_RESOURCE_ATTRIBUTES",
        read_by: ReadBy::Both,
        default: "(none)",
        meaning: "more resource attributes (key=value,...), e.g. deployment.environment=prod",
    },
];

/// The settings `binary` reads, as `--help` lists them.
pub fn settings_help(binary: ReadBy) -> String {
    let mut out = String::from("Settings (environment variables):\n");
    for s in SETTINGS.iter().filter(|s| s.read_by == binary || s.read_by == ReadBy::Both) {
        out.push_str(&format!("  {:<32} {} (default: {})\n", s.name, s.meaning, s.default));
    }
    out
}

fn var(name: &'static str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn parsed<T: FromStr>(name: &'static str, default: T) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match var(name) {
        None => Ok(default),
        Some(value) => {
            value.trim().parse().map_err(|e: T::Err| ConfigError::Invalid { name, reason: e.to_string(), value })
        }
    }
}

fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.to_owned(), source })
}

impl Limits {
    pub fn from_env() -> Result<Self, ConfigError> {
        let d = Limits::default();
        Ok(Self {
            rate_per_sec: parsed("GATEWAY_RATE_PER_SEC", d.rate_per_sec)?,
            rate_burst: parsed("GATEWAY_RATE_BURST", d.rate_burst)?,
            max_frame_bytes: parsed("GATEWAY_MAX_FRAME_BYTES", d.max_frame_bytes)?,
            outbox_frames: parsed("GATEWAY_OUTBOX_FRAMES", d.outbox_frames)?,
            outbox_bytes: parsed("GATEWAY_OUTBOX_BYTES", d.outbox_bytes)?,
            send_buffer_bytes: parsed("GATEWAY_SEND_BUFFER_BYTES", d.send_buffer_bytes)?,
            max_sockets_per_user: parsed("GATEWAY_MAX_SOCKETS_PER_USER", d.max_sockets_per_user)?,
            ping_interval: Duration::from_secs(parsed("GATEWAY_PING_SECS", 25)?),
            idle_timeout: Duration::from_secs(parsed("GATEWAY_IDLE_SECS", 60)?),
            close_grace: d.close_grace,
            upgrade_timeout: Duration::from_secs(parsed("GATEWAY_UPGRADE_TIMEOUT_SECS", 10)?),
            canary_interval: Duration::from_secs(parsed("GATEWAY_CANARY_SECS", 5)?),
            max_connections_per_ip: parsed("GATEWAY_MAX_CONNECTIONS_PER_IP", d.max_connections_per_ip)?,
            upgrades_per_ip_per_sec: parsed("GATEWAY_UPGRADES_PER_IP_PER_SEC", d.upgrades_per_ip_per_sec)?,
            drain_window: Duration::from_millis(parsed("GATEWAY_DRAIN_WINDOW_MS", 5000)?),
            resend_window: Duration::from_secs(parsed("GATEWAY_RESEND_WINDOW_SECS", 24 * 3600)?),
        })
    }
}

/// The JWT key from `JWT_SECRET` / `JWT_PUBLIC_KEY_FILE` and `JWT_ALGORITHM` (HS256 with a secret,
/// RS256 by default with a key file). The algorithm is pinned here and nowhere taken from a token.
fn jwt_from_env(secret: Option<String>) -> Result<Option<JwtKey>, ConfigError> {
    let alg = var("JWT_ALGORITHM").map(|a| a.to_ascii_uppercase());
    if let Some(path) = var("JWT_PUBLIC_KEY_FILE") {
        let pem = read_file(Path::new(&path))?;
        let alg = alg.unwrap_or_else(|| "RS256".into());
        return JwtKey::from_public_pem(&alg, pem.as_bytes()).map(Some).map_err(|reason| ConfigError::Invalid {
            name: "JWT_PUBLIC_KEY_FILE",
            value: path,
            reason,
        });
    }
    match (secret, alg.as_deref()) {
        (None, _) => Ok(None),
        (Some(s), None | Some("HS256")) => Ok(Some(JwtKey::Hs256(s))),
        (Some(_), Some(other)) => Err(ConfigError::Invalid {
            name: "JWT_ALGORITHM",
            value: other.into(),
            reason: "JWT_SECRET works with HS256 only; use JWT_PUBLIC_KEY_FILE for RS256/ES256".into(),
        }),
    }
}

/// Embedded mode's data folder: `GATEWAY_DATA_DIR`, else the user's data folder, so that the
/// default never depends on the working directory.
fn default_data_dir() -> PathBuf {
    if let Some(dir) = var("GATEWAY_DATA_DIR") {
        return PathBuf::from(dir);
    }
    let base = var("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|h| Path::new(&h).join(".local/share")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("rtgate")
}

/// A secret kept in `dir/name`, created with a random value on first use.
fn persistent_secret(dir: &Path, name: &str) -> Result<(String, bool), ConfigError> {
    let path = dir.join(name);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        if !existing.trim().is_empty() {
            return Ok((existing.trim().to_owned(), false));
        }
    }
    std::fs::create_dir_all(dir).map_err(|source| ConfigError::Io { path: dir.to_owned(), source })?;
    let value = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    write_private(&path, &value).map_err(|source| ConfigError::Io { path: path.clone(), source })?;
    Ok((value, true))
}

/// Writes a file only its owner can read (0600 on Unix): it holds a secret.
fn write_private(path: &Path, value: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    #[cfg(unix)]
    {
        // A file left by an older version may be wider; narrow it.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(value.as_bytes())
}

impl GatewayConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        let bind = parsed("GATEWAY_BIND", SocketAddr::from(([0, 0, 0, 0], 8000)))?;
        let redis = redis_target()?;
        let mut generated = Vec::new();
        let (database_url, jwt, api_key, data_dir) = match &redis {
            Some(_) => {
                let database_url = var("DATABASE_URL").ok_or(ConfigError::Missing { name: "DATABASE_URL" })?;
                let jwt = jwt_from_env(var("JWT_SECRET"))?
                    .ok_or(ConfigError::Missing { name: "JWT_SECRET (or JWT_PUBLIC_KEY_FILE)" })?;
                let api_key = var("GATEWAY_API_KEY").ok_or(ConfigError::Missing { name: "GATEWAY_API_KEY" })?;
                (database_url, jwt, api_key, None)
            }
            None => {
                let dir = default_data_dir();
                let database_url =
                    var("DATABASE_URL").unwrap_or_else(|| format!("sqlite://{}", dir.join("gateway.db").display()));
                let jwt = match jwt_from_env(var("JWT_SECRET"))? {
                    Some(key) => key,
                    None => {
                        let (secret, fresh) = persistent_secret(&dir, "jwt_secret")?;
                        if fresh {
                            generated.push("JWT_SECRET");
                        }
                        JwtKey::Hs256(secret)
                    }
                };
                let api_key = match var("GATEWAY_API_KEY") {
                    Some(key) => key,
                    None => {
                        let (key, fresh) = persistent_secret(&dir, "api_key")?;
                        if fresh {
                            generated.push("GATEWAY_API_KEY");
                        }
                        key
                    }
                };
                (database_url, jwt, api_key, Some(dir))
            }
        };
        Ok(Self {
            bind,
            redis,
            replica_acks: parsed("GATEWAY_REDIS_REPLICA_ACKS", 0)?,
            database_url,
            jwt,
            api_key,
            anonymous_personal: parsed("GATEWAY_ANONYMOUS_PERSONAL", false)?,
            limits: Limits::from_env()?,
            redis_prefix: redis_prefix()?,
            window: GroupWindow::from_env()?,
            data_dir,
            generated,
        })
    }

    pub fn is_embedded(&self) -> bool {
        self.redis.is_none()
    }
}

impl WorkerConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            redis: redis_target()?.ok_or(ConfigError::Required { name: "REDIS_URL (or REDIS_CLUSTER_NODES)" })?,
            replica_acks: parsed("GATEWAY_REDIS_REPLICA_ACKS", 0)?,
            database_url: var("DATABASE_URL").ok_or(ConfigError::Required { name: "DATABASE_URL" })?,
            redis_prefix: redis_prefix()?,
            window: GroupWindow::from_env()?,
            batch_size: parsed("WORKER_BATCH", 512)?,
            claim_idle: Duration::from_millis(parsed("WORKER_CLAIM_IDLE_MS", 15_000)?),
            consumer: var("WORKER_CONSUMER").unwrap_or_else(default_consumer_name),
            rules_path: var("WORKER_RULES"),
            metrics_bind: parsed("WORKER_METRICS_BIND", SocketAddr::from(([0, 0, 0, 0], 9100)))?,
        })
    }
}

/// The Redis of `REDIS_URL` or `REDIS_CLUSTER_NODES` (never both); `None` when neither is set.
fn redis_target() -> Result<Option<RedisTarget>, ConfigError> {
    match (var("REDIS_URL"), var("REDIS_CLUSTER_NODES")) {
        (Some(_), Some(_)) => Err(ConfigError::BothRedis),
        (Some(url), None) => Ok(Some(RedisTarget::Single(url))),
        (None, Some(list)) => RedisTarget::cluster_from_list(&list).map(Some).ok_or(ConfigError::Invalid {
            name: "REDIS_CLUSTER_NODES",
            value: list,
            reason: "name at least one node, as host:port or a redis:// URL".into(),
        }),
        (None, None) => Ok(None),
    }
}

/// `GATEWAY_REDIS_PREFIX`: no braces, which would change the keys' hash tags (see `keys`).
fn redis_prefix() -> Result<String, ConfigError> {
    let prefix = var("GATEWAY_REDIS_PREFIX").unwrap_or_else(|| DEFAULT_REDIS_PREFIX.into());
    if prefix.contains(['{', '}']) {
        return Err(ConfigError::Invalid {
            name: "GATEWAY_REDIS_PREFIX",
            value: prefix,
            reason: "braces would change the Redis Cluster hash tags of the keys".into(),
        });
    }
    Ok(prefix)
}

/// `host-pid-random`: unique per process, readable in `XINFO CONSUMERS`.
pub fn default_consumer_name() -> String {
    let host = var("HOSTNAME").unwrap_or_else(|| "worker".into());
    format!("{host}-{}-{}", std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variable this file reads is in `SETTINGS` and in the README's table.
    #[test]
    fn every_setting_read_is_listed_and_documented() {
        let source = include_str!("config.rs");
        let readme = include_str!("../../README.md");
        let not_settings = ["HOME", "XDG_DATA_HOME", "HOSTNAME"];
        for piece in source.split('"').skip(1).step_by(2) {
            let looks_like_a_variable =
                piece.len() > 3 && piece.chars().all(|c| c.is_ascii_uppercase() || c == '_') && piece.contains('_');
            if !looks_like_a_variable || not_settings.contains(&piece) {
                continue;
            }
            assert!(SETTINGS.iter().any(|s| s.name == piece), "{piece} is read but not in SETTINGS");
            assert!(readme.contains(&format!("`{piece}`")), "{piece} is not in the README's settings table");
        }
        for setting in SETTINGS {
            assert!(readme.contains(&format!("`{}`", setting.name)), "{} is not in the README", setting.name);
        }
    }

    #[test]
    fn printing_a_configuration_prints_no_secret() {
        assert_eq!(redacted_url("redis://:hunter2@redis:6379/0"), "redis://:***@redis:6379/0");
        assert_eq!(redacted_url("postgres://app:hunter2@db/app"), "postgres://app:***@db/app");
        assert_eq!(redacted_url("redis://redis:6379"), "redis://redis:6379");
        assert_eq!(redacted_url("sqlite:///data/gateway.db"), "sqlite:///data/gateway.db");
        let config = GatewayConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            redis: Some(RedisTarget::Cluster(vec![
                "redis://:hunter2@redis-0:6379".into(),
                "redis://redis-1:6379".into(),
            ])),
            replica_acks: 0,
            database_url: "postgres://app:hunter2@db/app".into(),
            jwt: JwtKey::Hs256("hunter2".into()),
            api_key: "hunter2".into(),
            anonymous_personal: false,
            limits: Limits::default(),
            redis_prefix: DEFAULT_REDIS_PREFIX.into(),
            window: GroupWindow::default(),
            data_dir: None,
            generated: Vec::new(),
        };
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("redis-0:6379,redis://redis-1:6379"), "the rest is still there: {printed}");
    }

    #[cfg(unix)]
    #[test]
    fn generated_secrets_are_readable_by_their_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("rtgate-secret-{}", uuid::Uuid::new_v4().simple()));
        let (value, generated) = persistent_secret(&dir, "api_key").unwrap();
        assert!(generated);
        let mode = std::fs::metadata(dir.join("api_key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(persistent_secret(&dir, "api_key").unwrap(), (value, false), "kept, not generated again");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
