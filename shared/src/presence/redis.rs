//! Presence in Redis (cluster mode), each step one script on Redis's own clock.

use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;

use super::{Departed, NodeDirectory, SocketQuota, UserPresence};
use crate::broker::BrokerError;
use crate::connection::{Commands, Conn};
use crate::event::Group;
use crate::ids::UserId;
use crate::keys::Keys;

/// Presence in Redis (cluster mode): `{prefix}{presence}:node:{node}` sets, a
/// `{prefix}{presence}:count` hash (user → number of nodes), a `{prefix}{presence}:nodes` sorted
/// set (node → last heartbeat, Redis time in ms). Every presence key carries the `{presence}`
/// hash tag: on a Redis Cluster they share one slot, so each script below stays one atomic step.
pub struct RedisPresence {
    commands: Commands,
    keys: Keys,
}

/// KEYS: the node's set, the count hash. ARGV: users. The users who were on no node before.
const ADD_ALL: &str = r"
local first = {}
for _, user in ipairs(ARGV) do
  if redis.call('SADD', KEYS[1], user) == 1 then
    if redis.call('HINCRBY', KEYS[2], user, 1) == 1 then table.insert(first, user) end
  end
end
return first";

/// KEYS: the node's set, the count hash. ARGV: users. The users now on no node.
const REMOVE_ALL: &str = r"
local last = {}
for _, user in ipairs(ARGV) do
  if redis.call('SREM', KEYS[1], user) == 1 then
    if redis.call('HINCRBY', KEYS[2], user, -1) <= 0 then
      redis.call('HDEL', KEYS[2], user)
      table.insert(last, user)
    end
  end
end
return last";

/// KEYS: the room's set on this node, the room's count hash, the node's set of rooms.
/// ARGV: user, room. 1 if the user is now in the room on no node. A room left empty on this node
/// leaves the node's set of rooms (which would otherwise only grow while the node lives, and
/// every reader of it pay for rooms long empty).
const LEAVE_ROOM: &str = r"
local last = 0
if redis.call('SREM', KEYS[1], ARGV[1]) == 1 then
  if redis.call('HINCRBY', KEYS[2], ARGV[1], -1) <= 0 then
    redis.call('HDEL', KEYS[2], ARGV[1])
    last = 1
  end
end
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SREM', KEYS[3], ARGV[2]) end
return last";

/// Lua for "now" in milliseconds on Redis's clock (nodes' clocks never matter).
macro_rules! redis_now_ms {
    () => {
        "local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"
    };
}

/// KEYS: the room's set on this node, the node's set of rooms, the room's count hash.
/// ARGV: user, room. 1 if the user was in the room on no node before.
const JOIN_ROOM: &str = r"
if redis.call('SADD', KEYS[1], ARGV[1]) == 1 then
  redis.call('SADD', KEYS[2], ARGV[2])
  if redis.call('HINCRBY', KEYS[3], ARGV[1], 1) == 1 then return 1 end
end
return 0";

/// KEYS: nodes zset. ARGV: node. Marks the node alive now; 1 if it was unknown.
const HEARTBEAT: &str = concat!(redis_now_ms!(), "return redis.call('ZADD', KEYS[1], now, ARGV[1])");

/// KEYS: nodes zset. ARGV: 'dead' or 'live', silence in ms. The nodes silent for at least that
/// long, or the others.
const NODES_BY_SILENCE: &str = concat!(
    redis_now_ms!(),
    r"
if ARGV[1] == 'dead' then
  return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
end
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (now - tonumber(ARGV[2])), '+inf')"
);

/// KEYS: nodes zset, count hash, the node's user set, the node's set of rooms, the node's socket
/// counts, then for each of the node's rooms its set on this node and its count hash. ARGV: node, the silence in ms that
/// makes it dead ('' to drop it regardless), then the rooms' names (in the order of KEYS).
/// Returns {users now offline, {room, user, room, user, ...} now in no room}. Every key arrives
/// in KEYS (as Redis Cluster requires); a node that heartbeated since it was found dead is left
/// alone.
const DROP_NODE: &str = concat!(
    redis_now_ms!(),
    r"
if ARGV[2] ~= '' then
  local beat = redis.call('ZSCORE', KEYS[1], ARGV[1])
  if beat and tonumber(beat) > now - tonumber(ARGV[2]) then return {{}, {}} end
end
local gone, rooms_gone = {}, {}
for _, user in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  if redis.call('HINCRBY', KEYS[2], user, -1) <= 0 then
    redis.call('HDEL', KEYS[2], user)
    table.insert(gone, user)
  end
end
for i = 6, #KEYS, 2 do
  local room = ARGV[3 + (i - 6) / 2]
  for _, user in ipairs(redis.call('SMEMBERS', KEYS[i])) do
    if redis.call('HINCRBY', KEYS[i + 1], user, -1) <= 0 then
      redis.call('HDEL', KEYS[i + 1], user)
      table.insert(rooms_gone, room)
      table.insert(rooms_gone, user)
    end
  end
  redis.call('DEL', KEYS[i])
end
redis.call('DEL', KEYS[3], KEYS[4], KEYS[5])
redis.call('ZREM', KEYS[1], ARGV[1])
return {gone, rooms_gone}"
);

/// KEYS: nodes zset, this node's socket counts. ARGV: node, user, the user's sockets on this
/// node, the cap, the silence in ms that makes a node dead, the socket counts' key of a node
/// without the node's name. 1 if admitted (and recorded), 0 if the cap is reached. The other
/// live nodes' counts are read by name (their keys share the `{presence}` slot).
const ADMIT_SOCKET: &str = concat!(
    redis_now_ms!(),
    r"
local user, here, cap = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local total = here
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (now - tonumber(ARGV[5])), '+inf')) do
  if node ~= ARGV[1] then total = total + (tonumber(redis.call('HGET', ARGV[6] .. node, user)) or 0) end
end
if total > cap then return 0 end
redis.call('HSET', KEYS[2], user, here)
return 1"
);

// Each script is built once (its SHA1 computed once); EVALSHA falls back to loading it.
static ADD_ALL_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(ADD_ALL));
static REMOVE_ALL_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(REMOVE_ALL));
static JOIN_ROOM_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(JOIN_ROOM));
static LEAVE_ROOM_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(LEAVE_ROOM));
static HEARTBEAT_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(HEARTBEAT));
static NODES_BY_SILENCE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(NODES_BY_SILENCE));
static DROP_NODE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(DROP_NODE));
static ADMIT_SOCKET_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(ADMIT_SOCKET));

impl RedisPresence {
    /// Runs `script` (KEYS: the node's set, the count hash; ARGV: the users) and reads back the
    /// users it returns. Nothing to send for no users.
    async fn each_user(
        &self,
        script: &redis::Script,
        node: &str,
        users: &[UserId],
    ) -> Result<Vec<UserId>, BrokerError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn().await?;
        let mut invocation = script.key(self.keys.presence_node(node));
        invocation.key(self.keys.presence_counts());
        for user in users {
            invocation.arg(user.as_str());
        }
        let changed: Vec<String> = invocation.invoke_async(&mut conn).await?;
        Ok(changed.iter().filter_map(|user| UserId::parse(user).ok()).collect())
    }

    pub fn new(commands: Commands, prefix: &str) -> Self {
        Self { commands, keys: Keys::new(prefix) }
    }

    async fn conn(&self) -> Result<Conn, BrokerError> {
        self.commands.conn().await
    }

    /// Nodes silent for `silence` (`dead`), or the others.
    async fn nodes_by_silence(&self, dead: bool, silence: Duration) -> Result<Vec<String>, BrokerError> {
        let mut conn = self.conn().await?;
        Ok(NODES_BY_SILENCE_SCRIPT
            .key(self.keys.presence_nodes())
            .arg(if dead { "dead" } else { "live" })
            .arg(silence.as_millis().to_string())
            .invoke_async(&mut conn)
            .await?)
    }

    /// Removes `node` and its users and rooms; `dead_after` re-checks that it is still silent.
    async fn drop_node(&self, node: &str, dead_after: Option<Duration>) -> Result<Departed, BrokerError> {
        let mut conn = self.conn().await?;
        let rooms: Vec<String> = redis::cmd("SMEMBERS").arg(self.keys.rooms_of(node)).query_async(&mut conn).await?;
        let mut script = DROP_NODE_SCRIPT.prepare_invoke();
        script
            .key(self.keys.presence_nodes())
            .key(self.keys.presence_counts())
            .key(self.keys.presence_node(node))
            .key(self.keys.rooms_of(node))
            .key(self.keys.sockets_of_node(node));
        for room in &rooms {
            let room = Group::from_name(room);
            script.key(self.keys.room(&room, node)).key(self.keys.room_count(&room));
        }
        script.arg(node).arg(dead_after.map(|d| d.as_millis().to_string()).unwrap_or_default());
        for room in &rooms {
            script.arg(room);
        }
        let (users, rooms_gone): (Vec<String>, Vec<String>) = script.invoke_async(&mut conn).await?;
        Ok(Departed {
            users: users.iter().filter_map(|u| UserId::parse(u).ok()).collect(),
            rooms: rooms_gone
                .chunks_exact(2)
                .filter_map(|pair| Some((Group::from_name(&pair[0]), UserId::parse(&pair[1]).ok()?)))
                .collect(),
        })
    }
}

#[async_trait]
impl UserPresence for RedisPresence {
    async fn add_all(&self, node: &str, users: &[UserId]) -> Result<Vec<UserId>, BrokerError> {
        self.each_user(&ADD_ALL_SCRIPT, node, users).await
    }

    async fn remove_all(&self, node: &str, users: &[UserId]) -> Result<Vec<UserId>, BrokerError> {
        self.each_user(&REMOVE_ALL_SCRIPT, node, users).await
    }

    async fn count(&self) -> Result<usize, BrokerError> {
        let mut conn = self.conn().await?;
        let n: usize = redis::cmd("HLEN").arg(self.keys.presence_counts()).query_async(&mut conn).await?;
        Ok(n)
    }

    async fn members(&self, node: &str) -> Result<Vec<UserId>, BrokerError> {
        let mut conn = self.conn().await?;
        let users: Vec<String> =
            redis::cmd("SMEMBERS").arg(self.keys.presence_node(node)).query_async(&mut conn).await?;
        Ok(users.iter().filter_map(|u| UserId::parse(u).ok()).collect())
    }

    async fn join_room(&self, node: &str, room: &Group, user: &UserId) -> Result<bool, BrokerError> {
        let mut conn = self.conn().await?;
        let first: i64 = JOIN_ROOM_SCRIPT
            .key(self.keys.room(room, node))
            .key(self.keys.rooms_of(node))
            .key(self.keys.room_count(room))
            .arg(user.as_str())
            .arg(room.as_str())
            .invoke_async(&mut conn)
            .await?;
        Ok(first == 1)
    }

    async fn leave_room(&self, node: &str, room: &Group, user: &UserId) -> Result<bool, BrokerError> {
        let mut conn = self.conn().await?;
        let last: i64 = LEAVE_ROOM_SCRIPT
            .key(self.keys.room(room, node))
            .key(self.keys.room_count(room))
            .key(self.keys.rooms_of(node))
            .arg(user.as_str())
            .arg(room.as_str())
            .invoke_async(&mut conn)
            .await?;
        Ok(last == 1)
    }

    async fn room_members(&self, room: &Group, dead_after: Duration) -> Result<Vec<UserId>, BrokerError> {
        let live = self.nodes_by_silence(false, dead_after).await?;
        if live.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn().await?;
        let keys: Vec<String> = live.iter().map(|node| self.keys.room(room, node)).collect();
        let users: Vec<String> = redis::cmd("SUNION").arg(keys).query_async(&mut conn).await?;
        let mut users: Vec<UserId> = users.iter().filter_map(|u| UserId::parse(u).ok()).collect();
        users.sort();
        Ok(users)
    }
}

#[async_trait]
impl SocketQuota for RedisPresence {
    async fn set_sockets_all(&self, node: &str, counts: &[(UserId, usize)]) -> Result<(), BrokerError> {
        if counts.is_empty() {
            return Ok(());
        }
        let key = self.keys.sockets_of_node(node);
        let (gone, open): (Vec<_>, Vec<_>) = counts.iter().partition(|(_, count)| *count == 0);
        let mut pipe = redis::pipe();
        if !gone.is_empty() {
            pipe.cmd("HDEL").arg(&key).arg(gone.iter().map(|(user, _)| user.as_str()).collect::<Vec<_>>()).ignore();
        }
        if !open.is_empty() {
            let fields: Vec<(&str, usize)> = open.iter().map(|(user, count)| (user.as_str(), *count)).collect();
            pipe.cmd("HSET").arg(&key).arg(fields).ignore();
        }
        let mut conn = self.conn().await?;
        let () = pipe.query_async(&mut conn).await?;
        Ok(())
    }

    async fn sockets_of(&self, user: &UserId, dead_after: Duration) -> Result<usize, BrokerError> {
        let live = self.nodes_by_silence(false, dead_after).await?;
        if live.is_empty() {
            return Ok(0);
        }
        let mut pipe = redis::pipe();
        for node in &live {
            pipe.hget(self.keys.sockets_of_node(node), user.as_str());
        }
        let mut conn = self.conn().await?;
        let counts: Vec<Option<usize>> = pipe.query_async(&mut conn).await?;
        Ok(counts.into_iter().flatten().sum())
    }

    async fn admit_socket(
        &self,
        node: &str,
        user: &UserId,
        here: usize,
        cap: usize,
        dead_after: Duration,
    ) -> Result<bool, BrokerError> {
        let mut conn = self.conn().await?;
        let admitted: i64 = ADMIT_SOCKET_SCRIPT
            .key(self.keys.presence_nodes())
            .key(self.keys.sockets_of_node(node))
            .arg(node)
            .arg(user.as_str())
            .arg(here)
            .arg(cap)
            .arg(dead_after.as_millis().to_string())
            .arg(self.keys.sockets_of_node(""))
            .invoke_async(&mut conn)
            .await?;
        Ok(admitted == 1)
    }
}

#[async_trait]
impl NodeDirectory for RedisPresence {
    async fn heartbeat(&self, node: &str) -> Result<bool, BrokerError> {
        let mut conn = self.conn().await?;
        let added: i64 = HEARTBEAT_SCRIPT.key(self.keys.presence_nodes()).arg(node).invoke_async(&mut conn).await?;
        Ok(added == 1)
    }

    async fn reap(&self, dead_after: Duration) -> Result<Departed, BrokerError> {
        let mut departed = Departed::default();
        for node in self.nodes_by_silence(true, dead_after).await? {
            departed.extend(self.drop_node(&node, Some(dead_after)).await?);
        }
        Ok(departed)
    }

    async fn leave(&self, node: &str) -> Result<Departed, BrokerError> {
        self.drop_node(node, None).await
    }

    async fn report(&self, node: &str, report: &str, ttl: Duration) -> Result<(), BrokerError> {
        let mut conn = self.conn().await?;
        let ttl_ms = ttl.as_millis() as u64;
        redis::cmd("SET")
            .arg(self.keys.node_report(node))
            .arg(report)
            .arg("PX")
            .arg(ttl_ms)
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    async fn reports(&self, dead_after: Duration) -> Result<Vec<String>, BrokerError> {
        let live = self.nodes_by_silence(false, dead_after).await?;
        if live.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for node in &live {
            pipe.get(self.keys.node_report(node));
        }
        let mut conn = self.conn().await?;
        let reports: Vec<Option<String>> = pipe.query_async(&mut conn).await?;
        Ok(reports.into_iter().flatten().collect())
    }
}
