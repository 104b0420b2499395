//! What the hub tells the rest of the node about its sockets, in the order it happened: each
//! user's first and last socket on this node, and in each room. The presence task
//! (`crate::presence`) consumes them; the hub does not know what presence does with them.

use shared::event::Group;
use shared::ids::UserId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// The user's first socket on this node opened.
    Connected(UserId),
    /// The user's last socket on this node closed.
    Disconnected(UserId),
    /// The user's first socket on this node in the room joined it.
    RoomJoined(Group, UserId),
    /// The user's last socket on this node in the room left it.
    RoomLeft(Group, UserId),
    /// The number of the user's sockets on this node changed (it is read from the hub).
    Sockets(UserId),
}
