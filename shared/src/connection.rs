//! Where Redis commands go: one Redis (`REDIS_URL`, through one shared multiplexed connection
//! that reconnects by itself) or a Redis Cluster (`REDIS_CLUSTER_NODES`, through the redis
//! crate's cluster connection, which routes each command to the master of its slot, follows
//! `MOVED`/`ASK` and refreshes its slot map).
//!
//! Why not a pool: every command of a node goes over one connection on each Redis, pipelined
//! with whatever else is in flight, so a checkout costs nothing. A pool's checkout costs a
//! round trip of its own (its health check: `UNWATCH` and `PING`), which was a quarter of all
//! the commands Redis ran per publication. Nothing here needs a connection to itself but the
//! blocking reads, which take one from [`Commands::blocking_conn`].
//!
//! Callers take a [`Conn`] from [`Commands::conn`] and run commands, scripts and single-slot
//! pipelines on it as on any connection. What may not cross slots (a script's keys, a pipeline)
//! is split by [`Commands::by_slot`]: per bucket on a cluster, all at once on one Redis.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::broker::BrokerError;
use crate::keys::BUCKETS;

/// Longest a single command may take before the caller hears `Timeout` (and a client `unavailable`).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);

/// The Redis a deployment uses, as configured.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// `REDIS_URL`.
    Single(String),
    /// `REDIS_CLUSTER_NODES`: seed nodes as `redis://` (or `rediss://`) URLs.
    Cluster(Vec<String>),
}

impl RedisTarget {
    /// The seed nodes of `REDIS_CLUSTER_NODES` (`host:port` or URLs, comma-separated).
    pub fn cluster_from_list(list: &str) -> Option<Self> {
        let nodes: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| if n.contains("://") { n.to_owned() } else { format!("redis://{n}") })
            .collect();
        (!nodes.is_empty()).then_some(Self::Cluster(nodes))
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// For logs and `check-config`: the URLs with their passwords masked.
    pub fn describe(&self) -> String {
        match self {
            Self::Single(url) => crate::config::redacted_url(url),
            Self::Cluster(nodes) => {
                let nodes: Vec<String> = nodes.iter().map(|n| crate::config::redacted_url(n)).collect();
                format!("cluster {}", nodes.join(","))
            }
        }
    }

    /// A cluster client with these response and connect deadlines (`None`: wait for the answer,
    /// for blocking reads bounded by their caller).
    pub(crate) fn cluster_client(
        nodes: &[String],
        response_timeout: Option<Duration>,
    ) -> Result<ClusterClient, BrokerError> {
        let mut builder = ClusterClientBuilder::new(nodes.to_vec()).connection_timeout(COMMAND_TIMEOUT);
        builder = match response_timeout {
            Some(limit) => builder.response_timeout(limit),
            None => builder.response_timeout(Duration::from_secs(3600)),
        };
        Ok(builder.build()?)
    }
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Hands out connections for commands (the broker's and the presence store's).
#[derive(Clone)]
pub struct Commands {
    route: Via,
}

#[derive(Clone)]
enum Via {
    /// One Redis: its shared connection (which also holds the client blocking reads dial with).
    Single(Arc<SharedConnection>),
    /// The cluster connection is made on first use and shared (it multiplexes, one connection
    /// per master).
    Cluster { nodes: Arc<[String]>, shared: Arc<tokio::sync::OnceCell<ClusterConnection>> },
}

impl Commands {
    /// Connects lazily: nothing is dialled until the first command, so a node starts (and says
    /// it is not ready) while Redis is away.
    pub fn new(target: &RedisTarget) -> Result<Self, BrokerError> {
        let route = match target {
            RedisTarget::Single(url) => {
                // RESP3: a connection reports its own end only to a RESP3 client.
                let info = redis::IntoConnectionInfo::into_connection_info(url.as_str())?;
                let settings = info.redis_settings().clone().set_protocol(redis::ProtocolVersion::RESP3);
                Via::Single(Arc::new(SharedConnection::new(redis::Client::open(info.set_redis_settings(settings))?)))
            }
            RedisTarget::Cluster(nodes) => {
                Via::Cluster { nodes: nodes.clone().into(), shared: Arc::new(tokio::sync::OnceCell::new()) }
            }
        };
        Ok(Self { route })
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self.route, Via::Cluster { .. })
    }

    /// A connection for commands: a handle on the shared connection (one Redis) or on the shared
    /// cluster connection.
    pub async fn conn(&self) -> Result<Conn, BrokerError> {
        match &self.route {
            Via::Single(shared) => Ok(Conn::Multiplexed(shared.get().await?)),
            Via::Cluster { nodes, shared } => {
                let conn = shared
                    .get_or_try_init(|| async {
                        let client = RedisTarget::cluster_client(nodes, Some(COMMAND_TIMEOUT))?;
                        tokio::time::timeout(COMMAND_TIMEOUT, client.get_async_connection())
                            .await
                            .map_err(|_| BrokerError::Timeout(COMMAND_TIMEOUT))?
                            .map_err(BrokerError::from)
                    })
                    .await?;
                Ok(Conn::Cluster(conn.clone()))
            }
        }
    }

    /// A connection of its own for blocking commands (`XREADGROUP … BLOCK`), with no response
    /// deadline of the client's: a blocked command holds its connection, so it must not share one.
    pub async fn blocking_conn(&self) -> Result<Conn, BrokerError> {
        let connect = async {
            match &self.route {
                Via::Single(shared) => {
                    let config = redis::AsyncConnectionConfig::new()
                        .set_response_timeout(None)
                        .set_connection_timeout(Some(COMMAND_TIMEOUT));
                    Ok(Conn::Multiplexed(shared.client.get_multiplexed_async_connection_with_config(&config).await?))
                }
                Via::Cluster { nodes, .. } => {
                    Ok(Conn::Cluster(RedisTarget::cluster_client(nodes, None)?.get_async_connection().await?))
                }
            }
        };
        tokio::time::timeout(COMMAND_TIMEOUT, connect).await.map_err(|_| BrokerError::Timeout(COMMAND_TIMEOUT))?
    }

    /// `items` in the batches that may go in one script or pipeline: on a cluster one batch per
    /// bucket (one slot each), on one Redis a single batch. Each batch holds the indexes of its
    /// items in their order, and the batches come in the order of their first items.
    pub fn by_slot<T>(&self, items: &[T], bucket_of: impl Fn(&T) -> usize) -> Vec<Vec<usize>> {
        if items.is_empty() {
            return Vec::new();
        }
        if !self.is_cluster() {
            return vec![(0..items.len()).collect()];
        }
        let mut batches: Vec<Vec<usize>> = vec![Vec::new(); BUCKETS];
        for (i, item) in items.iter().enumerate() {
            batches[bucket_of(item)].push(i);
        }
        batches.retain(|b| !b.is_empty());
        batches.sort_by_key(|b| b[0]);
        batches
    }
}

/// One Redis's shared connection: made by the first command that needs it, forgotten the
/// moment it breaks (the connection reports its own end), made again by the next command. So
/// the first command after Redis comes back finds a fresh connection, not a dead one.
struct SharedConnection {
    client: redis::Client,
    /// The connection and its generation (a report of a broken connection names its own).
    current: std::sync::Mutex<Option<(u64, MultiplexedConnection)>>,
    generation: std::sync::atomic::AtomicU64,
    /// One dial at a time: the commands waiting for a connection share it.
    dialing: tokio::sync::Mutex<()>,
}

impl SharedConnection {
    fn new(client: redis::Client) -> Self {
        Self { client, current: Default::default(), generation: Default::default(), dialing: Default::default() }
    }

    fn current(&self) -> Option<MultiplexedConnection> {
        self.current.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(|(_, conn)| conn.clone())
    }

    async fn get(self: &Arc<Self>) -> Result<MultiplexedConnection, BrokerError> {
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        let _dialing = self.dialing.lock().await;
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        let generation = self.generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let this = Arc::downgrade(self);
        let forget_when_broken = move |info: redis::PushInfo| -> Result<(), ()> {
            if info.kind == redis::PushKind::Disconnection {
                if let Some(this) = this.upgrade() {
                    let mut current = this.current.lock().unwrap_or_else(|e| e.into_inner());
                    if current.as_ref().is_some_and(|(made, _)| *made == generation) {
                        *current = None;
                    }
                }
            }
            Ok(())
        };
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_push_sender(forget_when_broken);
        let conn =
            tokio::time::timeout(COMMAND_TIMEOUT, self.client.get_multiplexed_async_connection_with_config(&config))
                .await
                .map_err(|_| BrokerError::Timeout(COMMAND_TIMEOUT))??;
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some((generation, conn.clone()));
        Ok(conn)
    }
}

/// One connection, whichever kind: commands, scripts and pipelines run on it alike.
pub enum Conn {
    /// One Redis: the shared connection, or a blocking read's own.
    Multiplexed(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Conn {
    /// `WAIT`s until `replicas` replicas have what this connection wrote to the master of `key`'s
    /// slot, for at most `limit`; returns how many have it.
    pub async fn wait_for_replicas(&mut self, key: &str, replicas: u32, limit: Duration) -> Result<u32, BrokerError> {
        let mut wait = redis::cmd("WAIT");
        wait.arg(replicas).arg(limit.as_millis() as u64);
        let acked = match self {
            Conn::Cluster(conn) => {
                // WAIT names no key: sent where the write went, not to every master.
                let route = Route::with_key(key, SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                conn.route_command(wait, routing).await?
            }
            _ => wait.query_async(self).await?,
        };
        match acked {
            Value::Int(n) => Ok(u32::try_from(n).unwrap_or(0)),
            _ => Ok(0),
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Multiplexed(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Multiplexed(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Multiplexed(conn) => conn.get_db(),
            Conn::Cluster(conn) => conn.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_nodes_are_read_as_host_port_or_urls() {
        let target = RedisTarget::cluster_from_list(" 10.0.0.1:7000, rediss://:pw@10.0.0.2:7001 ,").unwrap();
        assert_eq!(
            target,
            RedisTarget::Cluster(vec!["redis://10.0.0.1:7000".into(), "rediss://:pw@10.0.0.2:7001".into()])
        );
        assert!(!format!("{target:?}").contains("pw"), "{target:?}");
        assert_eq!(RedisTarget::cluster_from_list(" , "), None);
    }

    #[test]
    fn a_cluster_splits_work_by_bucket_in_the_order_of_first_items() {
        let items = [3usize, 1, 3, 2, 1];
        let cluster = Commands::new(&RedisTarget::Cluster(vec!["redis://127.0.0.1:1".into()])).unwrap();
        assert_eq!(cluster.by_slot(&items, |b| *b), vec![vec![0, 2], vec![1, 4], vec![3]]);
        let single = Commands::new(&RedisTarget::Single("redis://127.0.0.1:1".into())).unwrap();
        assert_eq!(single.by_slot(&items, |b| *b), vec![vec![0, 1, 2, 3, 4]]);
        assert!(single.by_slot(&[] as &[usize], |b| *b).is_empty());
    }
}
