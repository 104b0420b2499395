//! Pythia (pythia.md) across two nodes: connection, rooms, access rules, typing, online users,
//! presence broadcasts, the messages API with mentions and reactions, and the error codes.

use e2e::{eventually, http, token, Client, Cluster};
use serde_json::{json, Value};

fn ws_path(user: &str) -> String {
    format!("/ws?token={}", token(user))
}

/// Connects and reads `connection_established`.
async fn connect(cluster: &Cluster, node: usize, user: &str) -> Client {
    let mut client = Client::connect(&cluster.node(node).ws(&ws_path(user))).await;
    let hello = client.recv().await;
    assert_eq!(hello["type"], "connection_established", "{hello}");
    client
}

/// Sends a ping and asserts that no frame of the `forbidden` types arrived before the pong.
async fn none_before_pong(client: &mut Client, forbidden: &[&str]) {
    client.send_json(json!({"type": "ping"})).await;
    loop {
        let next = client.recv().await;
        if next["type"] == "pong" {
            return;
        }
        assert!(!forbidden.iter().any(|kind| next["type"] == *kind), "unexpected frame: {next}");
    }
}

async fn post(cluster: &Cluster, node: usize, user: &str, channel: &str, content: &str) -> (u16, Value) {
    let body = json!({"channel_id": channel, "content": content});
    http("POST", &cluster.node(node).http("/api/v1/messages/"), Some(&token(user)), Some(body)).await
}

async fn users(cluster: &Cluster) {
    for user in ["ann", "ben", "cat", "dan"] {
        cluster.user(user, None).await;
    }
    // "general": public, ann and ben. "secret": private, ann and cat.
    cluster.channel("general", "General", false, &["ann", "ben"]).await;
    cluster.channel("secret", "Secret", true, &["ann", "cat"]).await;
}

#[tokio::test]
async fn connection_established_then_member_channels_receive_messages() {
    let cluster = Cluster::start(2).await;
    users(&cluster).await;
    let mut ann = Client::connect(&cluster.node(0).ws(&ws_path("ann"))).await;
    let hello = ann.recv().await;
    assert_eq!(hello["type"], "connection_established");
    assert_eq!(hello["user_id"], "ann");
    assert_eq!(hello["username"], "ann");
    assert!(hello["timestamp"].as_str().unwrap().ends_with('Z'));

    let (status, stored) = post(&cluster, 1, "ben", "general", "Hello everyone!").await;
    assert_eq!(status, 201, "{stored}");
    let frame = ann.recv_type("new_message").await;
    assert_eq!(frame["data"], stored, "the 201 body is the broadcast data");
    let data = &frame["data"];
    assert_eq!(
        data.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["channelId", "content", "createdAt", "id", "updatedAt", "user", "userId"]
    );
    assert_eq!((data["channelId"].as_str(), data["userId"].as_str()), (Some("general"), Some("ben")));
    assert_eq!(data["user"], json!({"id": "ben", "username": "ben", "email": null}));
    assert!(frame["timestamp"].is_string());

    // And the secret channel too, as ann is a member.
    let (status, _) = post(&cluster, 0, "cat", "secret", "psst").await;
    assert_eq!(status, 201);
    assert_eq!(ann.recv_type("new_message").await["data"]["content"], "psst");

    let (_, history) =
        http("GET", &cluster.node(0).http("/api/v1/channels/general/messages"), Some(&token("ann")), None).await;
    assert_eq!(history["messages"][0], stored);
}

#[tokio::test]
async fn private_channels_stay_private() {
    let cluster = Cluster::start(2).await;
    users(&cluster).await;
    let mut dan = connect(&cluster, 1, "dan").await;

    dan.send_json(json!({"type": "join_channel", "channel_id": "secret"})).await;
    let denied = dan.recv().await;
    assert_eq!(denied["error_code"], "access_denied");
    assert_eq!(denied["message"], "Access denied to channel");
    assert!(denied["details"].as_str().unwrap().contains("private"));
    dan.send_json(json!({"type": "get_online_users", "channel_id": "secret"})).await;
    assert_eq!(dan.recv().await["error_code"], "access_denied");
    dan.send_json(json!({"type": "typing_indicator", "channel_id": "secret", "is_typing": true})).await;
    assert_eq!(dan.recv().await["error_code"], "access_denied");
    // An unknown channel looks the same as a private one.
    dan.send_json(json!({"type": "join_channel", "channel_id": "nope"})).await;
    assert_eq!(dan.recv().await["error_code"], "access_denied");

    let mut cat = connect(&cluster, 0, "cat").await;
    let mut ann = connect(&cluster, 0, "ann").await;
    cat.send_json(json!({"type": "typing_indicator", "channel_id": "secret", "is_typing": true})).await;
    assert_eq!(ann.recv_type("typing_indicator").await["user_id"], "cat");
    let (status, _) = post(&cluster, 0, "cat", "secret", "members only").await;
    assert_eq!(status, 201);
    assert_eq!(ann.recv_type("new_message").await["data"]["content"], "members only");
    let (status, _) = post(&cluster, 0, "dan", "secret", "let me in").await;
    assert_eq!(status, 404, "a non-member cannot post to a private channel");
    let (status, _) =
        http("GET", &cluster.node(0).http("/api/v1/channels/secret/messages"), Some(&token("dan")), None).await;
    assert_eq!(status, 404);
    // Nothing of the above reached dan.
    none_before_pong(&mut dan, &["new_message", "typing_indicator", "online_users"]).await;
}

#[tokio::test]
async fn rooms_typing_and_online_users_across_nodes() {
    let cluster = Cluster::start(2).await;
    users(&cluster).await;
    let mut ann = connect(&cluster, 0, "ann").await;
    let mut ben = connect(&cluster, 1, "ben").await;
    // A member's socket enters its channels' rooms on connect: the others hear it.
    assert_eq!(ann.recv_type("user_joined").await["user_id"], "ben");
    let mut dan = connect(&cluster, 1, "dan").await;

    // dan enters the public room without being a member.
    dan.send_json(json!({"type": "join_channel", "channel_id": "general"})).await;
    let joined = dan.recv().await;
    assert_eq!((joined["type"].as_str(), joined["channel_id"].as_str()), (Some("channel_joined"), Some("general")));
    let seen = ann.recv_type("user_joined").await;
    assert_eq!((seen["user_id"].as_str(), seen["channel_id"].as_str()), (Some("dan"), Some("general")));

    ann.send_json(json!({"type": "get_online_users", "channel_id": "general"})).await;
    let online = ann.recv_type("online_users").await;
    assert_eq!(online["users"], json!(["ann", "ben", "dan"]));
    assert_eq!(online["channel_id"], "general");

    ben.send_json(json!({"type": "typing_indicator", "channel_id": "general", "is_typing": true})).await;
    let typing = ann.recv_type("typing_indicator").await;
    assert_eq!(
        (typing["user_id"].as_str(), typing["channel_id"].as_str(), typing["is_typing"].as_bool()),
        (Some("ben"), Some("general"), Some(true))
    );
    assert_eq!(dan.recv_type("typing_indicator").await["user_id"], "ben");
    none_before_pong(&mut ben, &["typing_indicator"]).await; // never his own typing
                                                             // Ben disconnects while typing: the others see him stop.
    drop(ben);
    let cleared = ann.recv_type("typing_indicator").await;
    assert_eq!((cleared["user_id"].as_str(), cleared["is_typing"].as_bool()), (Some("ben"), Some(false)));
    assert_eq!(ann.recv_type("user_left").await["user_id"], "ben", "his last socket left the room");

    dan.send_json(json!({"type": "leave_channel", "channel_id": "general"})).await;
    assert_eq!(dan.recv_type("channel_left").await["channel_id"], "general");
    assert_eq!(ann.recv_type("user_left").await["user_id"], "dan");
    eventually("dan and ben are no longer in the room", || {
        let url = cluster.node(0).ws(&ws_path("cat"));
        async move {
            let mut probe = Client::connect(&url).await;
            probe.recv().await;
            probe.send_json(json!({"type": "get_online_users", "channel_id": "general"})).await;
            probe.recv_type("online_users").await["users"] == json!(["ann"])
        }
    })
    .await;
    // dan no longer receives the room's messages.
    post(&cluster, 0, "ann", "general", "after dan left").await;
    none_before_pong(&mut dan, &["new_message"]).await;
}

#[tokio::test]
async fn user_status_follows_the_first_and_last_socket_anywhere() {
    let cluster = Cluster::start(2).await;
    users(&cluster).await;
    let mut ann = connect(&cluster, 0, "ann").await;
    let ben_1 = connect(&cluster, 1, "ben").await;
    let online = ann.recv_type("user_status").await;
    assert_eq!((online["user_id"].as_str(), online["status"].as_str()), (Some("ben"), Some("online")));
    assert_eq!(ann.recv_type("user_joined").await["user_id"], "ben");
    let ben_2 = connect(&cluster, 0, "ben").await;
    drop(ben_1);
    // Ben still has a socket on node 0: no offline yet. A later event proves the order.
    cluster.channel("general", "General", false, &["ann", "ben", "dan"]).await;
    let next = ann.recv().await;
    assert_eq!((next["type"].as_str(), next["user_id"].as_str()), (Some("user_joined"), Some("dan")), "{next}");
    drop(ben_2);
    let offline = ann.recv_type("user_status").await;
    assert_eq!((offline["user_id"].as_str(), offline["status"].as_str()), (Some("ben"), Some("offline")));
}

#[tokio::test]
async fn a_killed_nodes_users_are_announced_offline() {
    let cluster = Cluster::start(1).await;
    users(&cluster).await;
    let mut ann = connect(&cluster, 0, "ann").await;
    let (mut process, addr) = cluster.spawn_node_process(env!("CARGO_BIN_EXE_e2e-gateway")).await;
    let mut ben = Client::connect(&format!("ws://{addr}{}", ws_path("ben"))).await;
    assert_eq!(ben.recv().await["type"], "connection_established");
    assert_eq!(ann.recv_type("user_status").await["status"], "online");
    assert_eq!(ann.recv_type("user_joined").await["user_id"], "ben");
    process.kill();
    // Reaped with its node: ben leaves the room, then goes offline.
    let left = ann.recv_type("user_left").await;
    assert_eq!((left["user_id"].as_str(), left["channel_id"].as_str()), (Some("ben"), Some("general")));
    let offline = ann.recv_type("user_status").await;
    assert_eq!((offline["user_id"].as_str(), offline["status"].as_str()), (Some("ben"), Some("offline")));
}

#[tokio::test]
async fn membership_changes_mentions_and_reactions_are_broadcast() {
    let cluster = Cluster::start(2).await;
    users(&cluster).await;
    let mut ann = connect(&cluster, 0, "ann").await;
    let mut ben = connect(&cluster, 1, "ben").await;
    assert_eq!(ann.recv_type("user_joined").await["user_id"], "ben", "ben's socket entered the room");

    let (status, _) =
        http("PUT", &cluster.node(1).http("/api/v1/channels/general/members/cat"), Some(e2e::API_KEY), None).await;
    assert_eq!(status, 200);
    let joined = ann.recv_type("user_joined").await;
    assert_eq!((joined["user_id"].as_str(), joined["channel_id"].as_str()), (Some("cat"), Some("general")));
    let (status, _) =
        http("DELETE", &cluster.node(1).http("/api/v1/channels/general/members/cat"), Some(e2e::API_KEY), None).await;
    assert_eq!(status, 200);
    assert_eq!(ann.recv_type("user_left").await["user_id"], "cat");

    let (status, stored) =
        post(&cluster, 0, "ann", "general", "Hey @ben, check this out! (and @dan, who is not a member)").await;
    assert_eq!(status, 201);
    let mention = ben.recv_type("mention_notification").await;
    assert_eq!(
        mention["data"],
        json!({"message_id": stored["id"], "channel_id": "general", "content": stored["content"], "from_user_id": "ann", "from_username": "ann"})
    );

    let reaction = json!({"message_id": stored["id"], "emoji": "👍", "action": "add"});
    let (status, body) =
        http("POST", &cluster.node(1).http("/api/v1/messages/reactions"), Some(&token("ben")), Some(reaction)).await;
    assert_eq!(status, 201, "{body}");
    let seen = ann.recv_type("message_reaction").await;
    assert_eq!(seen["message_id"], stored["id"]);
    assert_eq!(seen["data"], json!({"emoji": "👍", "user_id": "ben", "username": "ben", "action": "add"}));
    let remove = json!({"message_id": stored["id"], "emoji": "👍", "action": "remove"});
    http("POST", &cluster.node(1).http("/api/v1/messages/reactions"), Some(&token("ben")), Some(remove)).await;
    assert_eq!(ann.recv_type("message_reaction").await["data"]["action"], "remove");

    let bad = json!({"message_id": stored["id"], "emoji": "👍", "action": "poke"});
    let (status, body) =
        http("POST", &cluster.node(1).http("/api/v1/messages/reactions"), Some(&token("ben")), Some(bad)).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("action") || body["message"].as_str().unwrap().contains("poke"),
        "{body}"
    );
    let (status, _) = http(
        "POST",
        &cluster.node(1).http("/api/v1/messages/"),
        None,
        Some(json!({"channel_id": "general", "content": "x"})),
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn each_error_code_of_the_guide_has_its_cause() {
    let mut cluster = Cluster::start(1).await;
    users(&cluster).await;
    let mut ann = connect(&cluster, 0, "ann").await;
    let mut expect = async |frame: &str, code: &str| {
        ann.send_text(frame).await;
        let error = ann.recv_type("error").await;
        assert_eq!(error["error_code"], code, "{frame}: {error}");
    };
    expect("{oops", "invalid_json").await;
    expect(r#"{"type": "dance"}"#, "unknown_message_type").await;
    expect(r#"{"channel_id": "general"}"#, "unknown_message_type").await;
    expect(r#"{"type": "join_channel"}"#, "missing_channel_id").await;
    expect(r#"{"type": "leave_channel", "channel_id": ""}"#, "missing_channel_id").await;
    expect(r#"{"type": "typing_indicator", "is_typing": true}"#, "missing_channel_id").await;
    expect(r#"{"type": "get_online_users"}"#, "missing_channel_id").await;
    expect(r#"{"type": "join_channel", "channel_id": "secret-of-others"}"#, "access_denied").await;

    // With Redis gone, the operations that need it fail with their own codes.
    cluster.redis().kill();
    expect(r#"{"type": "typing_indicator", "channel_id": "general", "is_typing": true}"#, "typing_indicator_error")
        .await;
    expect(r#"{"type": "get_online_users", "channel_id": "general"}"#, "get_online_users_error").await;
    expect(r#"{"type": "leave_channel", "channel_id": "general"}"#, "leave_channel_error").await;
    expect(r#"{"type": "join_channel", "channel_id": "general"}"#, "join_channel_error").await;
    cluster.redis().start_again().await;
}

/// `user_joined` when a user's first socket anywhere enters a room (the auto-join at connect
/// counts, for a member; `join_channel` for a non-member in a public channel), `user_left`
/// when their last socket anywhere leaves it (a disconnect counts); a second socket on the other
/// node announces nothing.
#[tokio::test]
async fn room_presence_follows_the_first_and_last_socket_in_the_room_anywhere() {
    let cluster = Cluster::start(2).await;
    users(&cluster).await;
    let mut ann = connect(&cluster, 0, "ann").await;

    let ben = connect(&cluster, 1, "ben").await;
    let joined = ann.recv_type("user_joined").await;
    assert_eq!((joined["user_id"].as_str(), joined["channel_id"].as_str()), (Some("ben"), Some("general")));
    let ben_again = connect(&cluster, 0, "ben").await;
    drop(ben);
    drop(ben_again);
    let left = ann.recv_type("user_left").await;
    assert_eq!((left["user_id"].as_str(), left["channel_id"].as_str()), (Some("ben"), Some("general")));
    none_before_pong(&mut ann, &["user_joined", "user_left"]).await;

    // A non-member in a public room: joined by join_channel, left by disconnecting.
    let mut dan = connect(&cluster, 1, "dan").await;
    dan.send_json(json!({"type": "join_channel", "channel_id": "general"})).await;
    assert_eq!(dan.recv().await["type"], "channel_joined");
    assert_eq!(ann.recv_type("user_joined").await["user_id"], "dan");
    drop(dan);
    let left = ann.recv_type("user_left").await;
    assert_eq!((left["user_id"].as_str(), left["channel_id"].as_str()), (Some("dan"), Some("general")));
}

/// Rooms left empty leave the nodes' sets of rooms: after a user joins and leaves many public
/// rooms, and a member's socket comes and goes, no room is listed for anyone.
#[tokio::test]
async fn empty_rooms_leave_the_nodes_room_sets() {
    // Sixty frames in a row: above the default rate limit.
    let limits = shared::config::Limits { rate_per_sec: 1_000.0, rate_burst: 1_000.0, ..Default::default() };
    let cluster = Cluster::start_with(2, limits).await;
    users(&cluster).await;
    for n in 0..30 {
        cluster.channel(&format!("p{n}"), "Public", false, &["ann"]).await;
    }
    let mut dan = connect(&cluster, 1, "dan").await;
    for n in 0..30 {
        let room = format!("p{n}");
        dan.send_json(json!({"type": "join_channel", "channel_id": room})).await;
        assert_eq!(dan.recv_type("channel_joined").await["channel_id"], room.as_str());
        dan.send_json(json!({"type": "leave_channel", "channel_id": room})).await;
        assert_eq!(dan.recv_type("channel_left").await["channel_id"], room.as_str());
    }
    let ann = connect(&cluster, 0, "ann").await;
    eventually("ann's rooms are listed", || async { cluster.rooms_listed().await > 0 }).await;
    drop(ann);
    drop(dan);
    eventually("no room is listed once everyone left", || async { cluster.rooms_listed().await == 0 }).await;
}
