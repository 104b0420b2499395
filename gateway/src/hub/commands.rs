//! The messages between the hub's two tasks: the subscription manager (`super::subscriptions`),
//! the only one that talks to the broker about subscriptions, and the dispatcher
//! (`super::delivery`), the only one that delivers publications to sockets.

use shared::broker::WindowRead;
use shared::event::Group;

/// To the subscription manager.
pub(crate) enum ManagerCommand {
    /// A socket joined a group the node is not subscribed to yet.
    Subscribe(Group),
    /// The pub/sub connection is back: subscribe to everything again and refill every group.
    Reconnected,
}

/// To the dispatcher, after a resubscription: each group's refill, then the end of it.
pub(crate) enum Refill {
    /// What `group`'s window held after its position (`None`: it could not be read).
    Window(Group, Option<WindowRead>),
    /// Every group has been refilled: the node is in sync again.
    Done,
}
