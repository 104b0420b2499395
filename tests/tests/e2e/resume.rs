//! Resume (`?since=SEQ`): every frame rendered from a publication carries its group's `seq`; a
//! client that reconnects, to the other node, with the last one it saw gets exactly what it
//! missed, in order, then the live stream, with no gap and no duplicate at the seam, even while
//! publications keep coming during the reconnect. Past the window, a chat's messages come from
//! the database. A gap nothing can fill (events gone with the window, typing indicators among
//! them), or a number the group never reached, is answered with one `resync_required` frame.

use std::time::Duration;

use e2e::{http, token, Client, Cluster, API_KEY};
use serde_json::{json, Value};
use shared::config::{GroupWindow, Limits};
use shared::ids::ChatId;
use shared::store::{Page, Store};

async fn publish(base: &str, chat: &str, n: usize) {
    let event = json!({"type": "bulletin", "n": n});
    let (status, body) = http(
        "POST",
        &format!("{base}/api/v1/publish"),
        Some(API_KEY),
        Some(json!({"group": format!("chat:{chat}"), "event": event})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
}

fn seq(frame: &Value) -> u64 {
    frame["seq"].as_u64().unwrap_or_else(|| panic!("a frame without seq: {frame}"))
}

/// Frames until the one whose `n` is `last`, checking that their seqs run on from `after`
/// without a gap or a repeat.
async fn read_through(client: &mut Client, after: u64, last: usize) -> Vec<Value> {
    let mut frames = Vec::new();
    let mut expected = after + 1;
    loop {
        let frame = client.recv().await;
        assert_eq!(seq(&frame), expected, "seqs run on without gap or repeat: {frame}");
        expected += 1;
        let done = frame["n"].as_u64() == Some(last as u64);
        frames.push(frame);
        if done {
            return frames;
        }
    }
}

#[tokio::test]
async fn a_client_resumes_on_the_other_node_with_everything_it_missed_exactly_once() {
    let cluster = Cluster::start(2).await;
    cluster.user("rs-ann", None).await;
    cluster.chat("rs-chat", &["rs-ann"]).await;
    let (first, second) = (cluster.node(0), cluster.node(1));
    let path = |since: Option<u64>| {
        let since = since.map(|s| format!("&since={s}")).unwrap_or_default();
        format!("/api/v1/ws/chat/rs-chat?token={}{since}", token("rs-ann"))
    };

    let mut ann = Client::connect(&first.ws(&path(None))).await.numbered();
    publish(&first.http(""), "rs-chat", 0).await;
    let seen = ann.recv().await;
    assert_eq!(seen["n"], 0, "{seen}");
    let last_seen = seq(&seen);
    drop(ann);

    // 200 while away, then more while the client reconnects (some before its socket joins the
    // group, some after: the seam), then a last one.
    for n in 1..=200 {
        publish(&first.http(""), "rs-chat", n).await;
    }
    let base = first.http("");
    let during = tokio::spawn(async move {
        for n in 201..=260 {
            publish(&base, "rs-chat", n).await;
        }
    });
    let mut ann = Client::connect(&second.ws(&path(Some(last_seen)))).await.numbered();
    during.await.unwrap();
    publish(&first.http(""), "rs-chat", 261).await;
    let frames = read_through(&mut ann, last_seen, 261).await;
    let ns: Vec<u64> = frames.iter().map(|f| f["n"].as_u64().unwrap()).collect();
    assert_eq!(ns, (1..=261).collect::<Vec<u64>>(), "every message once, in order");

    // Resuming from where it now stands: nothing replayed, the live stream goes on.
    let now = seq(frames.last().unwrap());
    drop(ann);
    let mut ann = Client::connect(&first.ws(&path(Some(now)))).await.numbered();
    publish(&second.http(""), "rs-chat", 262).await;
    let next = ann.recv().await;
    assert_eq!((seq(&next), next["n"].as_u64()), (now + 1, Some(262)), "{next}");
}

#[tokio::test]
async fn a_gap_the_window_cannot_fill_is_answered_resync_required() {
    let cluster = Cluster::start(2).await;
    cluster.user("rs-bo", None).await;
    cluster.chat("rs-gap", &["rs-bo"]).await;
    let path = |since: &str| format!("/api/v1/ws/chat/rs-gap?token={}&since={since}", token("rs-bo"));
    let base = cluster.node(0).http("");

    // More than the window keeps (256 publications by default).
    for n in 1..=700 {
        publish(&base, "rs-gap", n).await;
    }
    let mut bo = Client::connect(&cluster.node(1).ws(&path("1"))).await.numbered();
    let frame = bo.recv().await;
    assert_eq!(
        (frame["type"].as_str(), frame["group"].as_str()),
        (Some("resync_required"), Some("chat:rs-gap")),
        "{frame}"
    );
    // Where the live stream stands: the next publication comes with the next number.
    let stands = seq(&frame);
    publish(&base, "rs-gap", 701).await;
    let live = bo.recv().await;
    assert_eq!((seq(&live), live["n"].as_u64()), (stands + 1, Some(701)), "then the live stream: {live}");

    // A number the group never reached, and one that is not a number.
    for since in ["99999999999999", "soon"] {
        let mut bo = Client::connect(&cluster.node(0).ws(&path(since))).await.numbered();
        let frame = bo.recv().await;
        assert_eq!(frame["type"], "resync_required", "since={since}: {frame}");
    }
}

/// A client that resends a message it is not sure went out (its socket dropped before the echo)
/// puts the same `client_message_id` on it: the resend, on another node, is answered with the
/// first send (the same message id) and nobody gets it twice; one message is stored.
#[tokio::test]
async fn a_resend_with_the_same_client_message_id_is_one_message() {
    let mut cluster = Cluster::start(2).await;
    cluster.start_worker().await;
    for user in ["cm-ann", "cm-bob"] {
        cluster.user(user, None).await;
    }
    cluster.chat("cm-chat", &["cm-ann", "cm-bob"]).await;
    let path = |user: &str| format!("/api/v1/ws/chat/cm-chat?token={}", token(user));
    let mut bob = Client::connect(&cluster.node(1).ws(&path("cm-bob"))).await;
    let send = json!({"type": "send_message", "data": {"content": "only once", "client_message_id": "f3a9-0001"}});

    let mut ann = Client::connect(&cluster.node(0).ws(&path("cm-ann"))).await;
    ann.send_json(send.clone()).await;
    let first = ann.recv_type("new_message").await;
    drop(ann);
    let mut ann = Client::connect(&cluster.node(1).ws(&path("cm-ann"))).await;
    ann.send_json(send).await;
    let answer = ann.recv_type("new_message").await;
    assert_eq!(answer["data"]["id"], first["data"]["id"], "answered as the first was: {answer}");

    // Bob heard it once: the next thing he hears is the marker published after the resend.
    assert_eq!(bob.recv_type("new_message").await["data"]["id"], first["data"]["id"]);
    publish(&cluster.node(0).http(""), "cm-chat", 1).await;
    assert_eq!(bob.recv().await["n"], 1, "nothing between the message and the marker");
    e2e::eventually("the message is stored", || async { !cluster.chat_history("cm-chat").await.is_empty() }).await;
    publish(&cluster.node(0).http(""), "cm-chat", 2).await;
    assert_eq!(bob.recv().await["n"], 2);
    assert_eq!(cluster.chat_history("cm-chat").await.len(), 1, "one message stored");
}

fn chat_text(text: &str) -> Value {
    json!({"type": "send_message", "data": {"content": text, "message_type": "text"}})
}

/// A window of 16 (Redis trims it a stream node, about 100 entries, at a time): 200 messages
/// missed are more than it keeps. They come from the database, each stored with its seq, then
/// the window's, then the live stream: all once, in order. A gap of typing indicators only (not
/// stored anywhere) that the window lost is `resync_required`, then the live stream.
#[tokio::test]
async fn past_the_window_messages_come_from_the_database_and_a_lost_typing_gap_is_resync_required() {
    let limits = Limits { rate_per_sec: 100_000.0, rate_burst: 100_000.0, ..Limits::default() };
    let window = GroupWindow { len: 16, ttl: Duration::from_secs(300) };
    let mut cluster = Cluster::start_windowed(2, limits, window).await;
    cluster.start_worker().await;
    for user in ["bf-ann", "bf-bob", "bf-cid"] {
        cluster.user(user, None).await;
    }
    cluster.chat("bf-chat", &["bf-ann", "bf-bob", "bf-cid"]).await;
    let path = |user: &str, since: Option<u64>| {
        let since = since.map(|s| format!("&since={s}")).unwrap_or_default();
        format!("/api/v1/ws/chat/bf-chat?token={}{since}", token(user))
    };
    let mut ann = Client::connect(&cluster.node(1).ws(&path("bf-ann", None))).await;
    let mut bob = Client::connect(&cluster.node(0).ws(&path("bf-bob", None))).await.numbered();
    ann.send_json(chat_text("m0")).await;
    let last_seen = seq(&bob.recv_type("new_message").await);
    drop(bob);
    for n in 1..=200 {
        ann.send_json(chat_text(&format!("m{n}"))).await;
        ann.recv_type("new_message").await;
    }
    // The worker has stored them (what a client resuming later than a moment after finds).
    let store = Store::connect(&cluster.db.url(), 2).await.unwrap();
    let chat = ChatId::parse("bf-chat").unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while store.chat_messages(&chat, Page { limit: 500, before: None }).await.unwrap().len() < 201 {
        assert!(tokio::time::Instant::now() < deadline, "the worker did not store the messages");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut bob = Client::connect(&cluster.node(1).ws(&path("bf-bob", Some(last_seen)))).await.numbered();
    for n in 1..=200u64 {
        let frame = bob.recv().await;
        assert_eq!(seq(&frame), last_seen + n, "in order, no gap, no repeat: {frame}");
        assert_eq!(frame["data"]["content"], format!("m{n}"), "{frame}");
    }
    ann.send_json(chat_text("m201")).await;
    let live = bob.recv().await;
    assert_eq!((seq(&live), live["data"]["content"].as_str()), (last_seen + 201, Some("m201")), "then live: {live}");
    drop(bob);
    // What operators see of it.
    assert_eq!(cluster.node(1).metric(r#"gateway_resumes_total{from="database"}"#).await, 1);

    // Typing only, more than the window keeps; a third member sees each go out.
    let mut cid = Client::connect(&cluster.node(0).ws(&path("bf-cid", None))).await;
    for _ in 0..250 {
        ann.send_json(json!({"type": "typing_indicator", "data": {"is_typing": true}})).await;
        cid.recv_type("typing_indicator").await;
    }
    let mut bob = Client::connect(&cluster.node(0).ws(&path("bf-bob", Some(last_seen + 201)))).await.numbered();
    let frame = bob.recv().await;
    assert_eq!(
        (frame["type"].as_str(), frame["group"].as_str()),
        (Some("resync_required"), Some("chat:bf-chat")),
        "{frame}"
    );
    assert_eq!(seq(&frame), last_seen + 451, "where the live stream stands: {frame}");
    assert_eq!(cluster.node(0).metric(r#"gateway_resumes_total{from="resync"}"#).await, 1);
    ann.send_json(chat_text("m202")).await;
    let live = bob.recv_type("new_message").await;
    assert_eq!((seq(&live), live["data"]["content"].as_str()), (last_seen + 452, Some("m202")), "{live}");
}

/// Pythia's `/ws` listens to several groups (the user's and each channel's): opened with
/// `?resume=`, each of its numbered frames carries a token of every group's position; reconnecting
/// with the last token, on the other node, gets what each channel published meanwhile, in order
/// and once, then the live stream.
#[tokio::test]
async fn a_socket_of_several_groups_resumes_from_its_token() {
    let cluster = Cluster::start(2).await;
    for user in ["rt-ann", "rt-ben", "rt-cat"] {
        cluster.user(user, None).await;
    }
    cluster.channel("rt-general", "General", false, &["rt-ann", "rt-ben"]).await;
    cluster.channel("rt-secret", "Secret", true, &["rt-ann", "rt-cat"]).await;
    let post = |node: usize, user: &'static str, channel: &'static str, content: String| {
        let url = cluster.node(node).http("/api/v1/messages/");
        async move {
            let body = json!({"channel_id": channel, "content": content});
            let (status, stored) = http("POST", &url, Some(&token(user)), Some(body)).await;
            assert_eq!(status, 201, "{stored}");
        }
    };
    let path = |resume: &str| format!("/ws?token={}&resume={resume}", token("rt-ann"));
    let mut ann = Client::connect(&cluster.node(0).ws(&path(""))).await;
    assert_eq!(ann.recv().await["type"], "connection_established");
    post(1, "rt-ben", "rt-general", "g0".into()).await;
    let first = ann.recv_type("new_message").await;
    let token0 = first["resume"].as_str().unwrap_or_else(|| panic!("a frame without its token: {first}")).to_owned();
    drop(ann);

    for n in 1..=30 {
        post(n % 2, "rt-ben", "rt-general", format!("g{n}")).await;
        post((n + 1) % 2, "rt-cat", "rt-secret", format!("s{n}")).await;
    }
    let mut ann = Client::connect(&cluster.node(1).ws(&path(&token0))).await;
    assert_eq!(ann.recv().await["type"], "connection_established");
    let (mut general, mut secret) = (Vec::new(), Vec::new());
    let mut last_token = token0.clone();
    while general.len() < 30 || secret.len() < 30 {
        let frame = ann.recv_type("new_message").await;
        last_token =
            frame["resume"].as_str().unwrap_or_else(|| panic!("a frame without its token: {frame}")).to_owned();
        let content = frame["data"]["content"].as_str().unwrap().to_owned();
        match frame["data"]["channelId"].as_str() {
            Some("rt-general") => general.push(content),
            Some("rt-secret") => secret.push(content),
            other => panic!("a frame of another channel: {other:?}"),
        }
    }
    assert_eq!(general, (1..=30).map(|n| format!("g{n}")).collect::<Vec<_>>(), "each once, in order");
    assert_eq!(secret, (1..=30).map(|n| format!("s{n}")).collect::<Vec<_>>(), "each once, in order");
    assert_ne!(last_token, token0);
    // Then live, nothing replayed twice before it.
    post(0, "rt-cat", "rt-secret", "live".into()).await;
    assert_eq!(ann.recv_type("new_message").await["data"]["content"], "live");
    drop(ann);

    // From the latest token: only what came after it.
    post(0, "rt-ben", "rt-general", "after".into()).await;
    let mut ann = Client::connect(&cluster.node(0).ws(&path(&last_token))).await;
    assert_eq!(ann.recv().await["type"], "connection_established");
    // The token was taken before "live": both are replayed.
    let mut missed = Vec::new();
    for _ in 0..2 {
        missed.push(ann.recv_type("new_message").await["data"]["content"].as_str().unwrap().to_owned());
    }
    missed.sort();
    assert_eq!(missed, ["after", "live"]);
    post(1, "rt-ben", "rt-general", "next".into()).await;
    assert_eq!(ann.recv_type("new_message").await["data"]["content"], "next", "nothing twice");

    // A token that is not one: every group resyncs.
    let mut ann = Client::connect(&cluster.node(1).ws(&path("not-a-token"))).await;
    assert_eq!(ann.recv().await["type"], "connection_established");
    let mut resyncs = Vec::new();
    for _ in 0..3 {
        let frame = ann.recv_type("resync_required").await;
        resyncs.push(frame["group"].as_str().unwrap().to_owned());
    }
    resyncs.sort();
    assert_eq!(resyncs, ["channel:rt-general", "channel:rt-secret", "user:rt-ann"]);
}

/// A group's window whose last entry is ahead of its counter (a clock that went back on a
/// failover, a key restored from a backup, anything else that wrote there) does not wedge the
/// group: the next publication starts a new epoch past it, is accepted and delivered, with a
/// number past the planted one, and the ones after it follow on.
#[tokio::test]
async fn a_window_ahead_of_its_counter_does_not_wedge_the_group() {
    let cluster = Cluster::start(2).await;
    cluster.user("rs-wedge", None).await;
    cluster.chat("rs-wedged", &["rs-wedge"]).await;
    let path = format!("/api/v1/ws/chat/rs-wedged?token={}", token("rs-wedge"));
    let mut ann = Client::connect(&cluster.node(1).ws(&path)).await.numbered();
    let base = cluster.node(0).http("");
    publish(&base, "rs-wedged", 0).await;
    let before = seq(&ann.recv().await);

    let planted = before + 1_000_000;
    let group = shared::event::Group::chat(&ChatId::parse("rs-wedged").unwrap());
    let window = shared::keys::Keys::new(&cluster.prefix).window(&group);
    let mut conn = cluster.redis_conn().await;
    let _: String = redis::cmd("XADD")
        .arg(&window)
        .arg(format!("{planted}-0"))
        .arg("p")
        .arg("{\"planted\":true}")
        .query_async(&mut conn)
        .await
        .expect("planting an entry ahead of the counter");

    publish(&base, "rs-wedged", 1).await;
    let first = loop {
        let frame = ann.recv().await;
        assert_ne!(frame["planted"], true, "the planted entry is never delivered: {frame}");
        if frame["n"] == 1 {
            break frame;
        }
    };
    assert!(seq(&first) > planted, "numbers go on past the planted entry: {first}");
    publish(&base, "rs-wedged", 2).await;
    let next = ann.recv().await;
    assert_eq!((seq(&next), next["n"].as_u64()), (seq(&first) + 1, Some(2)), "then on as usual: {next}");
}
