//! Who is online, cluster-wide. A user is online while any node has a socket of theirs.
//!
//! Each node keeps a set of its online users and a heartbeat; a user's count is the number of
//! nodes that have them. The first node to add a user makes them online, the last to remove
//! them makes them offline. Rooms (Pythia's channels) work the same way, per room: a user is in
//! a room while any node has a socket of theirs in it. A node that stops heartbeating (SIGKILL, partition) is reaped by any
//! other node: its users are removed as if their sockets had closed. Redis scripts make each
//! step atomic and use Redis's own clock, so node clocks never matter.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::broker::BrokerError;
use crate::event::Group;
use crate::ids::UserId;
use crate::keys::Keys;

#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// `node` has its first socket of `user`; true if the user was offline everywhere.
    async fn add(&self, node: &str, user: &UserId) -> Result<bool, BrokerError>;
    /// `node` closed its last socket of `user`; true if the user is now offline everywhere.
    async fn remove(&self, node: &str, user: &UserId) -> Result<bool, BrokerError>;
    /// Marks `node` alive. True if the node was unknown (first beat, or reaped while it was
    /// unreachable): it must then `add` its users again.
    async fn heartbeat(&self, node: &str) -> Result<bool, BrokerError>;
    /// Removes nodes silent for `dead_after`; returns who went offline, and left rooms, with them.
    async fn reap(&self, dead_after: Duration) -> Result<Departed, BrokerError>;
    /// A node leaving on purpose: its users are removed, as by `reap`.
    async fn leave(&self, node: &str) -> Result<Departed, BrokerError>;
    /// Distinct users online anywhere.
    async fn count(&self) -> Result<usize, BrokerError>;
    /// The users `node` is recorded with (to reconcile after an error).
    async fn members(&self, node: &str) -> Result<Vec<UserId>, BrokerError>;
    /// `user` has a socket in `room` on `node` (Pythia's channel rooms); true if the user was
    /// in that room on no node before.
    async fn join_room(&self, node: &str, room: &Group, user: &UserId) -> Result<bool, BrokerError>;
    /// `user` has no socket left in `room` on `node`; true if they are now in it on no node.
    async fn leave_room(&self, node: &str, room: &Group, user: &UserId) -> Result<bool, BrokerError>;
    /// Users with a socket in `room` on any live node.
    async fn room_members(&self, room: &Group, dead_after: Duration) -> Result<Vec<UserId>, BrokerError>;
    /// Records that `user` has `count` sockets open on `node` (0 removes the record).
    async fn set_sockets(&self, node: &str, user: &UserId, count: usize) -> Result<(), BrokerError>;
    /// `user`'s open sockets on every live node together (the per-user cap, cluster-wide).
    async fn sockets_of(&self, user: &UserId, dead_after: Duration) -> Result<usize, BrokerError>;
    /// Records `node`'s latest report (JSON, for the console), forgotten after `ttl`.
    async fn report(&self, node: &str, report: &str, ttl: Duration) -> Result<(), BrokerError>;
    /// The latest reports of the live nodes (heard from within `dead_after`).
    async fn reports(&self, dead_after: Duration) -> Result<Vec<String>, BrokerError>;
}

/// Who went away with a node that was reaped or left.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Departed {
    /// Users now offline everywhere.
    pub users: Vec<UserId>,
    /// (room, user) pairs: the user is now in that room on no node.
    pub rooms: Vec<(Group, UserId)>,
}

impl Departed {
    fn extend(&mut self, other: Departed) {
        self.users.extend(other.users);
        self.rooms.extend(other.rooms);
    }
}

/// Presence in one process (embedded mode).
#[derive(Default)]
pub struct MemoryPresence {
    state: Mutex<MemoryState>,
}

#[derive(Default)]
struct MemoryState {
    nodes: HashMap<String, (Instant, HashSet<UserId>)>,
    counts: HashMap<UserId, usize>,
    /// room → node → users in it there.
    rooms: HashMap<Group, HashMap<String, HashSet<UserId>>>,
    /// (room, user) → number of nodes where the user is in the room.
    room_counts: HashMap<(Group, UserId), usize>,
    /// node → user → open sockets there.
    sockets: HashMap<String, HashMap<UserId, usize>>,
    /// node → (report, forgotten at).
    reports: HashMap<String, (String, Instant)>,
}

impl MemoryState {
    fn drop_node(&mut self, node: &str) -> Departed {
        let mut departed = Departed::default();
        self.sockets.remove(node);
        for (room, nodes) in self.rooms.iter_mut() {
            for user in nodes.remove(node).unwrap_or_default() {
                let key = (room.clone(), user);
                if decrement(&mut self.room_counts, &key) {
                    departed.rooms.push(key);
                }
            }
        }
        if let Some((_, users)) = self.nodes.remove(node) {
            departed.users = users.into_iter().filter(|u| decrement(&mut self.counts, u)).collect();
        }
        departed
    }
}

/// True when the count reached zero (and was removed).
fn decrement<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, user: &K) -> bool {
    match counts.get_mut(user) {
        Some(n) if *n > 1 => {
            *n -= 1;
            false
        }
        Some(_) => {
            counts.remove(user);
            true
        }
        None => false,
    }
}

#[async_trait]
impl Presence for MemoryPresence {
    async fn add(&self, node: &str, user: &UserId) -> Result<bool, BrokerError> {
        let mut s = self.state.lock().expect("presence lock");
        let entry = s.nodes.entry(node.to_owned()).or_insert_with(|| (Instant::now(), HashSet::new()));
        if !entry.1.insert(user.clone()) {
            return Ok(false);
        }
        let n = s.counts.entry(user.clone()).or_default();
        *n += 1;
        Ok(*n == 1)
    }

    async fn remove(&self, node: &str, user: &UserId) -> Result<bool, BrokerError> {
        let mut s = self.state.lock().expect("presence lock");
        let removed = s.nodes.get_mut(node).is_some_and(|(_, users)| users.remove(user));
        Ok(removed && decrement(&mut s.counts, user))
    }

    async fn heartbeat(&self, node: &str) -> Result<bool, BrokerError> {
        let mut s = self.state.lock().expect("presence lock");
        match s.nodes.get_mut(node) {
            Some((beat, _)) => {
                *beat = Instant::now();
                Ok(false)
            }
            None => {
                s.nodes.insert(node.to_owned(), (Instant::now(), HashSet::new()));
                Ok(true)
            }
        }
    }

    async fn reap(&self, dead_after: Duration) -> Result<Departed, BrokerError> {
        let mut s = self.state.lock().expect("presence lock");
        let dead: Vec<String> =
            s.nodes.iter().filter(|(_, (beat, _))| beat.elapsed() >= dead_after).map(|(n, _)| n.clone()).collect();
        let mut departed = Departed::default();
        for node in dead {
            departed.extend(s.drop_node(&node));
        }
        Ok(departed)
    }

    async fn leave(&self, node: &str) -> Result<Departed, BrokerError> {
        Ok(self.state.lock().expect("presence lock").drop_node(node))
    }

    async fn count(&self) -> Result<usize, BrokerError> {
        Ok(self.state.lock().expect("presence lock").counts.len())
    }

    async fn members(&self, node: &str) -> Result<Vec<UserId>, BrokerError> {
        let s = self.state.lock().expect("presence lock");
        Ok(s.nodes.get(node).map(|(_, users)| users.iter().cloned().collect()).unwrap_or_default())
    }

    async fn join_room(&self, node: &str, room: &Group, user: &UserId) -> Result<bool, BrokerError> {
        let mut s = self.state.lock().expect("presence lock");
        let added = s.rooms.entry(room.clone()).or_default().entry(node.to_owned()).or_default().insert(user.clone());
        if !added {
            return Ok(false);
        }
        let n = s.room_counts.entry((room.clone(), user.clone())).or_default();
        *n += 1;
        Ok(*n == 1)
    }

    async fn leave_room(&self, node: &str, room: &Group, user: &UserId) -> Result<bool, BrokerError> {
        let mut s = self.state.lock().expect("presence lock");
        let removed = s.rooms.get_mut(room).and_then(|nodes| nodes.get_mut(node)).is_some_and(|u| u.remove(user));
        Ok(removed && decrement(&mut s.room_counts, &(room.clone(), user.clone())))
    }

    async fn room_members(&self, room: &Group, dead_after: Duration) -> Result<Vec<UserId>, BrokerError> {
        let s = self.state.lock().expect("presence lock");
        let live = |node: &String| s.nodes.get(node).is_some_and(|(beat, _)| beat.elapsed() < dead_after);
        let mut users: Vec<UserId> = s
            .rooms
            .get(room)
            .map(|nodes| nodes.iter().filter(|(n, _)| live(n)).flat_map(|(_, u)| u.iter().cloned()).collect())
            .unwrap_or_default();
        users.sort();
        users.dedup();
        Ok(users)
    }

    async fn set_sockets(&self, node: &str, user: &UserId, count: usize) -> Result<(), BrokerError> {
        let mut s = self.state.lock().expect("presence lock");
        let users = s.sockets.entry(node.to_owned()).or_default();
        if count == 0 {
            users.remove(user);
        } else {
            users.insert(user.clone(), count);
        }
        Ok(())
    }

    async fn sockets_of(&self, user: &UserId, dead_after: Duration) -> Result<usize, BrokerError> {
        let s = self.state.lock().expect("presence lock");
        let live = |node: &String| s.nodes.get(node).is_none_or(|(beat, _)| beat.elapsed() < dead_after);
        Ok(s.sockets.iter().filter(|(node, _)| live(node)).filter_map(|(_, users)| users.get(user)).sum())
    }

    async fn report(&self, node: &str, report: &str, ttl: Duration) -> Result<(), BrokerError> {
        let mut s = self.state.lock().expect("presence lock");
        s.reports.insert(node.to_owned(), (report.to_owned(), Instant::now() + ttl));
        Ok(())
    }

    async fn reports(&self, dead_after: Duration) -> Result<Vec<String>, BrokerError> {
        let mut s = self.state.lock().expect("presence lock");
        let now = Instant::now();
        s.reports.retain(|_, (_, until)| *until > now);
        let live = |node: &String| s.nodes.get(node).is_some_and(|(beat, _)| beat.elapsed() < dead_after);
        Ok(s.reports.iter().filter(|(node, _)| live(node)).map(|(_, (report, _))| report.clone()).collect())
    }
}

/// Presence in Redis (cluster mode): `{prefix}presence:node:{node}` sets, a
/// `{prefix}presence:count` hash (user → number of nodes), a `{prefix}presence:nodes` sorted set
/// (node → last heartbeat, Redis time in ms).
pub struct RedisPresence {
    pool: deadpool_redis::Pool,
    keys: Keys,
}

const ADD: &str = r"
if redis.call('SADD', KEYS[1], ARGV[1]) == 1 then
  if redis.call('HINCRBY', KEYS[2], ARGV[1], 1) == 1 then return 1 end
end
return 0";

const REMOVE: &str = r"
if redis.call('SREM', KEYS[1], ARGV[1]) == 1 then
  if redis.call('HINCRBY', KEYS[2], ARGV[1], -1) <= 0 then
    redis.call('HDEL', KEYS[2], ARGV[1])
    return 1
  end
end
return 0";

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

/// KEYS: the room's set on this node, the room's count hash. ARGV: user. 1 if the user is now in
/// the room on no node.
const LEAVE_ROOM: &str = REMOVE;

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

impl RedisPresence {
    pub fn new(pool: deadpool_redis::Pool, prefix: &str) -> Self {
        Self { pool, keys: Keys::new(prefix) }
    }

    async fn conn(&self) -> Result<deadpool_redis::Connection, BrokerError> {
        Ok(self.pool.get().await?)
    }

    /// Nodes silent for `silence` (`dead`), or the others.
    async fn nodes_by_silence(&self, dead: bool, silence: Duration) -> Result<Vec<String>, BrokerError> {
        let mut conn = self.conn().await?;
        Ok(redis::Script::new(NODES_BY_SILENCE)
            .key(self.keys.presence_nodes())
            .arg(if dead { "dead" } else { "live" })
            .arg(silence.as_millis().to_string())
            .invoke_async(&mut *conn)
            .await?)
    }

    /// Removes `node` and its users and rooms; `dead_after` re-checks that it is still silent.
    async fn drop_node(&self, node: &str, dead_after: Option<Duration>) -> Result<Departed, BrokerError> {
        let mut conn = self.conn().await?;
        let rooms: Vec<String> = redis::cmd("SMEMBERS").arg(self.keys.rooms_of(node)).query_async(&mut *conn).await?;
        let drop_node = redis::Script::new(DROP_NODE);
        let mut script = drop_node.prepare_invoke();
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
        let (users, rooms_gone): (Vec<String>, Vec<String>) = script.invoke_async(&mut *conn).await?;
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
impl Presence for RedisPresence {
    async fn add(&self, node: &str, user: &UserId) -> Result<bool, BrokerError> {
        let mut conn = self.conn().await?;
        let first: i64 = redis::Script::new(ADD)
            .key(self.keys.presence_node(node))
            .key(self.keys.presence_counts())
            .arg(user.as_str())
            .invoke_async(&mut *conn)
            .await?;
        Ok(first == 1)
    }

    async fn remove(&self, node: &str, user: &UserId) -> Result<bool, BrokerError> {
        let mut conn = self.conn().await?;
        let last: i64 = redis::Script::new(REMOVE)
            .key(self.keys.presence_node(node))
            .key(self.keys.presence_counts())
            .arg(user.as_str())
            .invoke_async(&mut *conn)
            .await?;
        Ok(last == 1)
    }

    async fn heartbeat(&self, node: &str) -> Result<bool, BrokerError> {
        let mut conn = self.conn().await?;
        let added: i64 =
            redis::Script::new(HEARTBEAT).key(self.keys.presence_nodes()).arg(node).invoke_async(&mut *conn).await?;
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

    async fn count(&self) -> Result<usize, BrokerError> {
        let mut conn = self.conn().await?;
        let n: usize = redis::cmd("HLEN").arg(self.keys.presence_counts()).query_async(&mut *conn).await?;
        Ok(n)
    }

    async fn members(&self, node: &str) -> Result<Vec<UserId>, BrokerError> {
        let mut conn = self.conn().await?;
        let users: Vec<String> =
            redis::cmd("SMEMBERS").arg(self.keys.presence_node(node)).query_async(&mut *conn).await?;
        Ok(users.iter().filter_map(|u| UserId::parse(u).ok()).collect())
    }

    async fn join_room(&self, node: &str, room: &Group, user: &UserId) -> Result<bool, BrokerError> {
        let mut conn = self.conn().await?;
        let first: i64 = redis::Script::new(JOIN_ROOM)
            .key(self.keys.room(room, node))
            .key(self.keys.rooms_of(node))
            .key(self.keys.room_count(room))
            .arg(user.as_str())
            .arg(room.as_str())
            .invoke_async(&mut *conn)
            .await?;
        Ok(first == 1)
    }

    async fn leave_room(&self, node: &str, room: &Group, user: &UserId) -> Result<bool, BrokerError> {
        let mut conn = self.conn().await?;
        let last: i64 = redis::Script::new(LEAVE_ROOM)
            .key(self.keys.room(room, node))
            .key(self.keys.room_count(room))
            .arg(user.as_str())
            .invoke_async(&mut *conn)
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
        let users: Vec<String> = redis::cmd("SUNION").arg(keys).query_async(&mut *conn).await?;
        let mut users: Vec<UserId> = users.iter().filter_map(|u| UserId::parse(u).ok()).collect();
        users.sort();
        Ok(users)
    }

    async fn set_sockets(&self, node: &str, user: &UserId, count: usize) -> Result<(), BrokerError> {
        let mut conn = self.conn().await?;
        let key = self.keys.sockets_of_node(node);
        if count == 0 {
            let _: i64 = redis::cmd("HDEL").arg(key).arg(user.as_str()).query_async(&mut *conn).await?;
        } else {
            let _: i64 = redis::cmd("HSET").arg(key).arg(user.as_str()).arg(count).query_async(&mut *conn).await?;
        }
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
        let counts: Vec<Option<usize>> = pipe.query_async(&mut *conn).await?;
        Ok(counts.into_iter().flatten().sum())
    }

    async fn report(&self, node: &str, report: &str, ttl: Duration) -> Result<(), BrokerError> {
        let mut conn = self.conn().await?;
        let ttl_ms = ttl.as_millis() as u64;
        redis::cmd("SET")
            .arg(self.keys.node_report(node))
            .arg(report)
            .arg("PX")
            .arg(ttl_ms)
            .query_async::<()>(&mut *conn)
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
        let reports: Vec<Option<String>> = pipe.query_async(&mut *conn).await?;
        Ok(reports.into_iter().flatten().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(id: &str) -> UserId {
        UserId::parse(id).unwrap()
    }

    #[tokio::test]
    async fn online_while_any_node_has_the_user() {
        let p = MemoryPresence::default();
        assert!(p.heartbeat("a").await.unwrap());
        assert!(!p.heartbeat("a").await.unwrap());
        assert!(p.add("a", &u("carol")).await.unwrap());
        assert!(!p.add("b", &u("carol")).await.unwrap(), "already online elsewhere");
        assert_eq!(p.count().await.unwrap(), 1);
        assert!(!p.remove("a", &u("carol")).await.unwrap(), "still on b");
        assert!(p.remove("b", &u("carol")).await.unwrap());
        assert_eq!(p.count().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_dead_node_takes_only_its_own_users_offline() {
        let p = MemoryPresence::default();
        p.heartbeat("dead").await.unwrap();
        p.add("dead", &u("x")).await.unwrap();
        p.add("dead", &u("y")).await.unwrap();
        p.add("live", &u("y")).await.unwrap();
        p.heartbeat("live").await.unwrap();
        let gone = p.reap(Duration::ZERO).await.unwrap();
        // Both nodes are "dead" with a zero timeout; use leave to show the single-node case.
        assert_eq!(gone.users.len(), 2);
        let p = MemoryPresence::default();
        p.add("dead", &u("x")).await.unwrap();
        p.add("dead", &u("y")).await.unwrap();
        p.add("live", &u("y")).await.unwrap();
        assert_eq!(p.leave("dead").await.unwrap().users, vec![u("x")]);
        assert_eq!(p.count().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn in_a_room_while_any_node_has_the_user_in_it() {
        let p = MemoryPresence::default();
        let room = Group::from_name("channel:c");
        assert!(p.join_room("a", &room, &u("x")).await.unwrap(), "first anywhere");
        assert!(!p.join_room("b", &room, &u("x")).await.unwrap(), "already in it on a");
        assert!(!p.leave_room("a", &room, &u("x")).await.unwrap(), "still in it on b");
        assert!(p.join_room("a", &room, &u("y")).await.unwrap());
        let departed = p.leave("b").await.unwrap();
        assert_eq!(departed.rooms, vec![(room.clone(), u("x"))]);
        assert!(p.leave_room("a", &room, &u("y")).await.unwrap());
        assert!(!p.leave_room("a", &room, &u("y")).await.unwrap(), "leaving twice counts once");
    }
}
