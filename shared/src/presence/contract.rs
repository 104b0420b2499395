//! The contracts every presence implementation passes, one suite per trait: `user_presence`,
//! `socket_quota`, `node_directory`. Run on `MemoryPresence` by this crate's unit tests and on
//! `RedisPresence` against a real Redis server by the end-to-end suite. Each case gets a fresh
//! store (a new memory one, or a new key prefix on Redis) from `make`, and node names of its own.

use std::sync::Arc;
use std::time::Duration;

use super::Presence;
use crate::event::Group;
use crate::ids::UserId;

/// Long enough that no node of a case is ever dead by it: liveness by silence is not timed here.
const ALIVE: Duration = Duration::from_secs(600);

fn u(id: &str) -> UserId {
    UserId::parse(id).expect("a valid user id")
}

/// Listings come in no promised order.
fn sorted(mut users: Vec<UserId>) -> Vec<UserId> {
    users.sort();
    users
}

/// Every case of every suite, each on a fresh store from `make`.
pub async fn run_all(make: &impl Fn() -> Arc<dyn Presence>) {
    user_presence(make).await;
    socket_quota(make).await;
    node_directory(make).await;
}

/// `UserPresence`: online while any node has the user; in a room while any node has them in it.
pub async fn user_presence(make: &impl Fn() -> Arc<dyn Presence>) {
    online_while_any_node_has_the_user(make().as_ref()).await;
    many_users_come_and_go_in_one_step(make().as_ref()).await;
    in_a_room_while_any_node_has_the_user_in_it(make().as_ref()).await;
}

/// `SocketQuota`: a user's sockets summed over the live nodes.
pub async fn socket_quota(make: &impl Fn() -> Arc<dyn Presence>) {
    sockets_are_summed_over_the_live_nodes(make().as_ref()).await;
    many_counts_are_recorded_in_one_step(make().as_ref()).await;
    a_socket_is_admitted_against_the_cap_on_every_live_node(make().as_ref()).await;
}

/// `NodeDirectory`: heartbeats, a departing node taking only its own users, reports.
pub async fn node_directory(make: &impl Fn() -> Arc<dyn Presence>) {
    a_first_heartbeat_says_the_node_was_unknown(make().as_ref()).await;
    a_departing_node_takes_only_its_own_users_offline(make().as_ref()).await;
    reports_are_read_back_while_their_node_lives(make().as_ref()).await;
}

async fn online_while_any_node_has_the_user(p: &dyn Presence) {
    p.heartbeat("a").await.unwrap();
    p.heartbeat("b").await.unwrap();
    assert!(p.add("a", &u("carol")).await.unwrap());
    assert!(!p.add("b", &u("carol")).await.unwrap(), "already online elsewhere");
    assert!(!p.add("b", &u("carol")).await.unwrap(), "adding twice counts once");
    assert_eq!(p.count().await.unwrap(), 1);
    assert_eq!(p.members("a").await.unwrap(), vec![u("carol")]);
    assert!(!p.remove("a", &u("carol")).await.unwrap(), "still on b");
    assert!(p.remove("b", &u("carol")).await.unwrap());
    assert!(!p.remove("b", &u("carol")).await.unwrap(), "removing twice counts once");
    assert_eq!(p.count().await.unwrap(), 0);
    assert_eq!(p.members("a").await.unwrap(), Vec::<UserId>::new());
}

async fn many_users_come_and_go_in_one_step(p: &dyn Presence) {
    p.heartbeat("a").await.unwrap();
    p.heartbeat("b").await.unwrap();
    assert!(p.add("b", &u("y")).await.unwrap());
    let first = p.add_all("a", &[u("x"), u("y"), u("x")]).await.unwrap();
    assert_eq!(first, vec![u("x")], "y was online on b; x twice counts once");
    assert_eq!(p.count().await.unwrap(), 2);
    assert_eq!(sorted(p.members("a").await.unwrap()), vec![u("x"), u("y")]);
    let last = p.remove_all("a", &[u("x"), u("y"), u("z")]).await.unwrap();
    assert_eq!(last, vec![u("x")], "y is still on b; z was never here");
    assert_eq!(p.add_all("a", &[]).await.unwrap(), Vec::<UserId>::new());
    assert_eq!(p.remove_all("a", &[]).await.unwrap(), Vec::<UserId>::new());
    assert_eq!(p.count().await.unwrap(), 1);
}

async fn in_a_room_while_any_node_has_the_user_in_it(p: &dyn Presence) {
    let room = Group::from_name("channel:c");
    p.heartbeat("a").await.unwrap();
    p.heartbeat("b").await.unwrap();
    assert!(p.join_room("a", &room, &u("x")).await.unwrap(), "first anywhere");
    assert!(!p.join_room("b", &room, &u("x")).await.unwrap(), "already in it on a");
    assert!(!p.leave_room("a", &room, &u("x")).await.unwrap(), "still in it on b");
    assert!(p.join_room("a", &room, &u("y")).await.unwrap());
    assert_eq!(sorted(p.room_members(&room, ALIVE).await.unwrap()), vec![u("x"), u("y")]);
    let departed = p.leave("b").await.unwrap();
    assert_eq!(departed.rooms, vec![(room.clone(), u("x"))]);
    assert_eq!(p.room_members(&room, ALIVE).await.unwrap(), vec![u("y")]);
    assert!(p.leave_room("a", &room, &u("y")).await.unwrap());
    assert!(!p.leave_room("a", &room, &u("y")).await.unwrap(), "leaving twice counts once");
}

async fn sockets_are_summed_over_the_live_nodes(p: &dyn Presence) {
    p.heartbeat("a").await.unwrap();
    p.heartbeat("b").await.unwrap();
    p.set_sockets("a", &u("x"), 2).await.unwrap();
    p.set_sockets("b", &u("x"), 1).await.unwrap();
    p.set_sockets("b", &u("y"), 4).await.unwrap();
    assert_eq!(p.sockets_of(&u("x"), ALIVE).await.unwrap(), 3);
    p.set_sockets("a", &u("x"), 0).await.unwrap();
    assert_eq!(p.sockets_of(&u("x"), ALIVE).await.unwrap(), 1, "0 removes the record");
    p.leave("b").await.unwrap();
    assert_eq!(p.sockets_of(&u("x"), ALIVE).await.unwrap(), 0, "a node gone takes its sockets");
    assert_eq!(p.sockets_of(&u("nobody"), ALIVE).await.unwrap(), 0);
}

async fn many_counts_are_recorded_in_one_step(p: &dyn Presence) {
    p.heartbeat("a").await.unwrap();
    p.set_sockets_all("a", &[(u("x"), 2), (u("y"), 3)]).await.unwrap();
    assert_eq!(p.sockets_of(&u("x"), ALIVE).await.unwrap(), 2);
    assert_eq!(p.sockets_of(&u("y"), ALIVE).await.unwrap(), 3);
    p.set_sockets_all("a", &[(u("x"), 0), (u("y"), 1)]).await.unwrap();
    assert_eq!(p.sockets_of(&u("x"), ALIVE).await.unwrap(), 0);
    assert_eq!(p.sockets_of(&u("y"), ALIVE).await.unwrap(), 1);
    p.set_sockets_all("a", &[]).await.unwrap();
    assert_eq!(p.sockets_of(&u("y"), ALIVE).await.unwrap(), 1, "nothing to record changes nothing");
}

async fn a_socket_is_admitted_against_the_cap_on_every_live_node(p: &dyn Presence) {
    p.heartbeat("a").await.unwrap();
    p.heartbeat("b").await.unwrap();
    p.set_sockets("b", &u("x"), 2).await.unwrap();
    assert!(p.admit_socket("a", &u("x"), 1, 3, ALIVE).await.unwrap(), "2 elsewhere and 1 here: 3, the cap");
    assert_eq!(p.sockets_of(&u("x"), ALIVE).await.unwrap(), 3, "the admitted socket is recorded");
    assert!(!p.admit_socket("a", &u("x"), 2, 3, ALIVE).await.unwrap(), "a fourth is over the cap");
    assert_eq!(p.sockets_of(&u("x"), ALIVE).await.unwrap(), 3, "a refused socket records nothing");
    p.leave("b").await.unwrap();
    assert!(p.admit_socket("a", &u("x"), 2, 3, ALIVE).await.unwrap(), "a node gone takes its sockets");
}

async fn a_first_heartbeat_says_the_node_was_unknown(p: &dyn Presence) {
    assert!(p.heartbeat("a").await.unwrap(), "unknown at first");
    assert!(!p.heartbeat("a").await.unwrap());
    p.leave("a").await.unwrap();
    assert!(p.heartbeat("a").await.unwrap(), "unknown again after leaving: it must add its users again");
}

async fn a_departing_node_takes_only_its_own_users_offline(p: &dyn Presence) {
    p.heartbeat("dead").await.unwrap();
    p.heartbeat("live").await.unwrap();
    p.add("dead", &u("x")).await.unwrap();
    p.add("dead", &u("y")).await.unwrap();
    p.add("live", &u("y")).await.unwrap();
    assert_eq!(p.leave("dead").await.unwrap().users, vec![u("x")]);
    assert_eq!(p.count().await.unwrap(), 1);
    assert_eq!(p.reap(ALIVE).await.unwrap().users, Vec::<UserId>::new(), "nobody silent that long");
    assert_eq!(p.count().await.unwrap(), 1);
}

async fn reports_are_read_back_while_their_node_lives(p: &dyn Presence) {
    p.heartbeat("a").await.unwrap();
    p.heartbeat("b").await.unwrap();
    p.report("a", r#"{"node":"a"}"#, ALIVE).await.unwrap();
    p.report("b", r#"{"node":"b"}"#, ALIVE).await.unwrap();
    p.report("a", r#"{"node":"a","n":2}"#, ALIVE).await.unwrap();
    let mut reports = p.reports(ALIVE).await.unwrap();
    reports.sort();
    assert_eq!(reports, vec![r#"{"node":"a","n":2}"#.to_owned(), r#"{"node":"b"}"#.to_owned()], "the latest each");
    p.leave("b").await.unwrap();
    assert_eq!(
        p.reports(ALIVE).await.unwrap(),
        vec![r#"{"node":"a","n":2}"#.to_owned()],
        "a node gone, its report too"
    );
}

#[cfg(test)]
mod memory_contract {
    use super::*;
    use crate::presence::MemoryPresence;

    fn memory() -> Arc<dyn Presence> {
        Arc::new(MemoryPresence::default())
    }

    #[tokio::test]
    async fn memory_presence_passes_the_user_presence_contract() {
        user_presence(&memory).await;
    }

    #[tokio::test]
    async fn memory_presence_passes_the_socket_quota_contract() {
        socket_quota(&memory).await;
    }

    #[tokio::test]
    async fn memory_presence_passes_the_node_directory_contract() {
        node_directory(&memory).await;
    }
}
