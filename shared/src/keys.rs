//! Every Redis key and channel name, in one place. All carry the deployment's prefix so that
//! several deployments (or test runs) can share one Redis without meeting.

use crate::event::Group;

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

    /// Users with a socket in `room` on `node` (Pythia channel rooms).
    pub fn room(&self, room: &Group, node: &str) -> String {
        format!("{}room:{room}:{node}", self.prefix)
    }

    /// User → sockets open on `node` (the per-user cap, counted cluster-wide).
    pub fn sockets_of_node(&self, node: &str) -> String {
        format!("{}sockets:{node}", self.prefix)
    }

    /// User → number of nodes where the user is in `room`.
    pub fn room_count(&self, room: &Group) -> String {
        format!("{}room-count:{room}", self.prefix)
    }

    /// The rooms `node` has sets for, so that reaping the node removes them.
    pub fn rooms_of(&self, node: &str) -> String {
        format!("{}rooms:{node}", self.prefix)
    }

    /// The pub/sub channel of a group: `{prefix}{group}`, e.g. `rt:session:550e…`.
    pub fn channel(&self, group: &Group) -> String {
        format!("{}{}", self.prefix, group)
    }

    /// A group's publication counter: a hash of `epoch` and `seq` (`event::Position`).
    pub fn counter(&self, group: &Group) -> String {
        format!("{}seq:{group}", self.prefix)
    }

    /// A group's window of recent publications: a stream whose entry ids are `{seq}-0`.
    pub fn window(&self, group: &Group) -> String {
        format!("{}window:{group}", self.prefix)
    }

    /// The group a channel belongs to, or `None` for a channel of another deployment.
    pub fn group_of<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel.strip_prefix(&self.prefix)
    }

    /// The jobs stream consumed by the workers.
    pub fn jobs_stream(&self) -> String {
        format!("{}jobs", self.prefix)
    }

    /// Jobs the workers could not apply, with the error (see `Broker::dead_letter`).
    pub fn dead_letters(&self) -> String {
        format!("{}jobs:dead", self.prefix)
    }

    /// One node's set of online users.
    pub fn presence_node(&self, node: &str) -> String {
        format!("{}presence:node:{node}", self.prefix)
    }

    /// User → number of nodes where the user has a socket.
    pub fn presence_counts(&self) -> String {
        format!("{}presence:count", self.prefix)
    }

    /// Node → last heartbeat (Redis time, ms).
    pub fn presence_nodes(&self) -> String {
        format!("{}presence:nodes", self.prefix)
    }

    /// A client's send remembered under its `client_message_id` (`Broker::publish_once`).
    pub fn sent(&self, id: &str) -> String {
        format!("{}sent:{id}", self.prefix)
    }

    /// One node's latest report for the console (JSON, expires with the node's silence).
    pub fn node_report(&self, node: &str) -> String {
        format!("{}presence:report:{node}", self.prefix)
    }

    /// The consumer group of the workers on the jobs stream.
    pub fn jobs_group(&self) -> &'static str {
        "workers"
    }
}
