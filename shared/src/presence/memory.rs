//! Presence in one process (embedded mode).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{Departed, NodeDirectory, SocketQuota, UserPresence};
use crate::broker::BrokerError;
use crate::event::Group;
use crate::ids::UserId;

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
impl UserPresence for MemoryPresence {
    async fn add_all(&self, node: &str, users: &[UserId]) -> Result<Vec<UserId>, BrokerError> {
        let mut s = self.state.lock().expect("presence lock");
        let mut first = Vec::new();
        for user in users {
            let entry = s.nodes.entry(node.to_owned()).or_insert_with(|| (Instant::now(), HashSet::new()));
            if !entry.1.insert(user.clone()) {
                continue;
            }
            let n = s.counts.entry(user.clone()).or_default();
            *n += 1;
            if *n == 1 {
                first.push(user.clone());
            }
        }
        Ok(first)
    }

    async fn remove_all(&self, node: &str, users: &[UserId]) -> Result<Vec<UserId>, BrokerError> {
        let mut s = self.state.lock().expect("presence lock");
        let mut last = Vec::new();
        for user in users {
            let removed = s.nodes.get_mut(node).is_some_and(|(_, on_node)| on_node.remove(user));
            if removed && decrement(&mut s.counts, user) {
                last.push(user.clone());
            }
        }
        Ok(last)
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
        // Empty rooms go, as on Redis: what is kept is what someone is in.
        if let Some(nodes) = s.rooms.get_mut(room) {
            nodes.retain(|_, users| !users.is_empty());
            if nodes.is_empty() {
                s.rooms.remove(room);
            }
        }
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
}

#[async_trait]
impl SocketQuota for MemoryPresence {
    async fn set_sockets_all(&self, node: &str, counts: &[(UserId, usize)]) -> Result<(), BrokerError> {
        let mut s = self.state.lock().expect("presence lock");
        let users = s.sockets.entry(node.to_owned()).or_default();
        for (user, count) in counts {
            if *count == 0 {
                users.remove(user);
            } else {
                users.insert(user.clone(), *count);
            }
        }
        Ok(())
    }

    async fn sockets_of(&self, user: &UserId, dead_after: Duration) -> Result<usize, BrokerError> {
        let s = self.state.lock().expect("presence lock");
        let live = |node: &String| s.nodes.get(node).is_none_or(|(beat, _)| beat.elapsed() < dead_after);
        Ok(s.sockets.iter().filter(|(node, _)| live(node)).filter_map(|(_, users)| users.get(user)).sum())
    }

    async fn admit_socket(
        &self,
        node: &str,
        user: &UserId,
        here: usize,
        cap: usize,
        dead_after: Duration,
    ) -> Result<bool, BrokerError> {
        let mut s = self.state.lock().expect("presence lock");
        let live = |at: &String| at != node && s.nodes.get(at).is_none_or(|(beat, _)| beat.elapsed() < dead_after);
        let elsewhere: usize =
            s.sockets.iter().filter(|(at, _)| live(at)).filter_map(|(_, users)| users.get(user)).sum();
        if elsewhere + here > cap {
            return Ok(false);
        }
        s.sockets.entry(node.to_owned()).or_default().insert(user.clone(), here);
        Ok(true)
    }
}

#[async_trait]
impl NodeDirectory for MemoryPresence {
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
