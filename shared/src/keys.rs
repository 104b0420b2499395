//! Every Redis key and channel name, in one place. All carry the deployment's prefix so that
//! several deployments (or test runs) can share one Redis without meeting.
//!
//! # Layout (the same on a single Redis and on a Redis Cluster)
//!
//! Redis Cluster hashes a key to one of 16,384 slots by the part between its first `{` and `}`
//! (its hash tag), and a script or pipeline may only touch keys of one slot. So every key is
//! tagged:
//!
//! - **A group's keys** carry the tag of the group's *bucket*, one of [`BUCKETS`]: its counter
//!   `rt:{05ad}:seq:chat:42`, its window `rt:{05ad}:window:chat:42`, its channel
//!   `rt:{05ad}:chat:42`, a send remembered by `client_message_id` `rt:{05ad}:sent:…`, and the
//!   bucket's jobs stream `rt:{05ad}:jobs` (with its dead letters `rt:{05ad}:jobs:dead`). One
//!   publication (counter, window, channel, job) is therefore one single-slot script. The 16 tags
//!   are chosen so their slots sit evenly over the slot space (one in each sixteenth): however a
//!   cluster splits the slots, its masters get an even share of the buckets.
//! - **Presence** (users online, rooms, per-user socket counts, nodes and their reports, the
//!   workers' heartbeats) carries
//!   `{presence}`: one slot, so a node's cleanup stays one atomic script. It changes per socket,
//!   not per message.

use crate::event::Group;

/// How many buckets the groups (and the jobs) are spread over. Every process of a deployment
/// must agree: it decides where a group's keys live.
pub const BUCKETS: usize = 16;

/// Each bucket's hash tag: bucket `i`'s tag hashes to a slot in the `i`-th sixteenth of the
/// slot space (checked by a test), so any split of the slots over masters balances them.
const BUCKET_TAGS: [&str; BUCKETS] = [
    "00dd", "01dc", "02d", "03fc", "04k", "05ad", "06bd", "07bc", "08bb", "09c", "10k", "11ai", "12bh", "13bk", "14di",
    "15dj",
];

/// The bucket a group's keys live in: a stable hash of its name (FNV-1a, the same in every
/// process and version).
pub fn bucket_of(group: &Group) -> usize {
    let hash = group.as_str().bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    hash as usize % BUCKETS
}

/// A node's canary groups (`gateway::canary`): one in each bucket, so that on a Redis Cluster
/// its canaries cross every master that holds any group (and each of the node's sharded
/// subscriber connections); index `i` is in bucket `i`. Named `canary:{node}:{n}`.
pub fn canary_groups(node: &str) -> Vec<Group> {
    let mut groups: Vec<Option<Group>> = vec![None; BUCKETS];
    let mut n = 0u32;
    while groups.iter().any(Option::is_none) {
        let group = Group::from_name(&format!("canary:{node}:{n}"));
        let bucket = bucket_of(&group);
        groups[bucket].get_or_insert(group);
        n += 1;
    }
    groups.into_iter().flatten().collect()
}

#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_owned() }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `{prefix}{tag}:` of a group's bucket, which all its keys start with.
    fn group_head(&self, group: &Group) -> String {
        self.bucket_head(bucket_of(group))
    }

    fn bucket_head(&self, bucket: usize) -> String {
        format!("{}{{{}}}:", self.prefix, BUCKET_TAGS[bucket])
    }

    /// Users with a socket in `room` on `node` (Pythia channel rooms).
    pub fn room(&self, room: &Group, node: &str) -> String {
        format!("{}{{presence}}:room:{room}:{node}", self.prefix)
    }

    /// User → sockets open on `node` (the per-user cap, counted cluster-wide).
    pub fn sockets_of_node(&self, node: &str) -> String {
        format!("{}{{presence}}:sockets:{node}", self.prefix)
    }

    /// User → number of nodes where the user is in `room`.
    pub fn room_count(&self, room: &Group) -> String {
        format!("{}{{presence}}:room-count:{room}", self.prefix)
    }

    /// The rooms `node` has sets for, so that reaping the node removes them.
    pub fn rooms_of(&self, node: &str) -> String {
        format!("{}{{presence}}:rooms:{node}", self.prefix)
    }

    /// The pub/sub channel of a group: `{prefix}{tag}:{group}`, e.g. `rt:{05ad}:session:550e…`.
    pub fn channel(&self, group: &Group) -> String {
        format!("{}{group}", self.group_head(group))
    }

    /// A group's publication counter: a hash of `epoch` and `seq` (`event::Position`).
    pub fn counter(&self, group: &Group) -> String {
        format!("{}seq:{group}", self.group_head(group))
    }

    /// A group's window of recent publications: a stream whose entry ids are `{seq}-0`.
    pub fn window(&self, group: &Group) -> String {
        format!("{}window:{group}", self.group_head(group))
    }

    /// The group a channel belongs to, or `None` for a channel of another deployment.
    pub fn group_of<'a>(&self, channel: &'a str) -> Option<&'a str> {
        let tagged = channel.strip_prefix(&self.prefix)?.strip_prefix('{')?;
        let (tag, rest) = tagged.split_once('}')?;
        BUCKET_TAGS.contains(&tag).then_some(())?;
        rest.strip_prefix(':')
    }

    /// The jobs stream of `bucket`, consumed by the workers (a group's jobs go to its bucket's).
    pub fn jobs_stream(&self, bucket: usize) -> String {
        format!("{}jobs", self.bucket_head(bucket))
    }

    /// Jobs of `bucket` the workers could not apply, with the error (see `Broker::dead_letter`).
    pub fn dead_letters(&self, bucket: usize) -> String {
        format!("{}jobs:dead", self.bucket_head(bucket))
    }

    /// One node's set of online users.
    pub fn presence_node(&self, node: &str) -> String {
        format!("{}{{presence}}:node:{node}", self.prefix)
    }

    /// User → number of nodes where the user has a socket.
    pub fn presence_counts(&self) -> String {
        format!("{}{{presence}}:count", self.prefix)
    }

    /// Node → last heartbeat (Redis time, ms).
    pub fn presence_nodes(&self) -> String {
        format!("{}{{presence}}:nodes", self.prefix)
    }

    /// Worker (consumer) → when its heartbeat runs out (Redis time, ms; 0: it stopped cleanly).
    pub fn workers(&self) -> String {
        format!("{}{{presence}}:workers", self.prefix)
    }

    /// A client's send remembered under its `client_message_id` (`Broker::publish_once`), in
    /// the slot of the group it was sent to.
    pub fn sent(&self, group: &Group, id: &str) -> String {
        format!("{}sent:{id}", self.group_head(group))
    }

    /// One node's latest report for the console (JSON, expires with the node's silence).
    pub fn node_report(&self, node: &str) -> String {
        format!("{}{{presence}}:report:{node}", self.prefix)
    }

    /// The consumer group of the workers on the jobs streams.
    pub fn jobs_group(&self) -> &'static str {
        "workers"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Redis Cluster's key slot (CRC16/XMODEM of the hash tag, mod 16384).
    fn slot(key: &str) -> u16 {
        let tag = match key.split_once('{').and_then(|(_, rest)| rest.split_once('}')) {
            Some((tag, _)) if !tag.is_empty() => tag,
            _ => key,
        };
        let crc = tag.bytes().fold(0u16, |mut crc, byte| {
            crc ^= u16::from(byte) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
            }
            crc
        });
        crc % 16384
    }

    #[test]
    fn bucket_tags_sit_one_in_each_sixteenth_of_the_slots() {
        let width = 16384 / BUCKETS as u16;
        for (i, tag) in BUCKET_TAGS.iter().enumerate() {
            let at = slot(&format!("{{{tag}}}"));
            assert_eq!(usize::from(at / width), i, "bucket {i}'s tag {tag} hashes to slot {at}");
        }
    }

    #[test]
    fn a_group_keys_share_one_slot_with_its_bucket_jobs_stream() {
        let keys = Keys::new("rt:");
        let group = Group::from_name("chat:42");
        let bucket = bucket_of(&group);
        let all = [
            keys.counter(&group),
            keys.window(&group),
            keys.channel(&group),
            keys.sent(&group, "u1:c9"),
            keys.jobs_stream(bucket),
            keys.dead_letters(bucket),
        ];
        for key in &all {
            assert_eq!(slot(key), slot(&all[0]), "{key}");
        }
        assert_eq!(keys.group_of(&keys.channel(&group)), Some("chat:42"));
        assert_eq!(keys.group_of("rt:chat:42"), None);
        assert_eq!(keys.group_of("other:{00dd}:chat:42"), None);
    }

    #[test]
    fn groups_spread_over_every_bucket() {
        let mut seen = [0usize; BUCKETS];
        for i in 0..1600 {
            seen[bucket_of(&Group::from_name(&format!("chat:{i}")))] += 1;
        }
        assert!(seen.iter().all(|n| (60..=140).contains(n)), "{seen:?}");
    }

    #[test]
    fn a_node_has_a_canary_in_every_bucket() {
        let canaries = canary_groups("node-1");
        assert_eq!(canaries.len(), BUCKETS);
        for (i, group) in canaries.iter().enumerate() {
            assert_eq!(bucket_of(group), i);
            assert!(group.as_str().starts_with("canary:node-1:"), "{group}");
        }
    }

    #[test]
    fn presence_keys_share_one_slot() {
        let keys = Keys::new("rt:");
        let room = Group::from_name("channel:general");
        let all = [
            keys.presence_nodes(),
            keys.presence_counts(),
            keys.presence_node("n1"),
            keys.rooms_of("n1"),
            keys.sockets_of_node("n1"),
            keys.room(&room, "n1"),
            keys.room_count(&room),
            keys.node_report("n1"),
        ];
        for key in &all {
            assert_eq!(slot(key), slot(&all[0]), "{key}");
        }
    }
}
