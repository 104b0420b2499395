//! Hostile clients held off: connections that never finish their upgrade request are closed
//! after the deadline, whether silent or trickling, while a real client keeps working.

use std::time::Duration;

use e2e::{session_path, token, Client, Cluster, HANG_GUARD};
use serde_json::json;
use shared::config::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes the connection (or resets it); panics after the hang guard.
async fn closed_by_server(stream: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(HANG_GUARD, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue, // hyper may answer 408 first
            }
        }
    })
    .await
    .expect("the server kept a connection that never finished its request");
}

#[tokio::test]
async fn connections_that_never_finish_their_upgrade_are_closed_after_the_deadline() {
    let limits = Limits { upgrade_timeout: Duration::from_secs(1), ..Limits::default() };
    let cluster = Cluster::start_with(1, limits).await;
    cluster.user("alice", None).await;
    cluster.user("bob", None).await;
    let session = cluster.session("alice", "bob").await;
    let addr = cluster.node(0).addr;

    let mut silent: Vec<TcpStream> = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    let mut trickling = TcpStream::connect(addr).await.unwrap();
    let head = format!("GET {} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n", session_path(&session, &token("alice")));
    trickling.write_all(head.as_bytes()).await.unwrap();
    let trickle = tokio::spawn(async move {
        // One more header line every 300 ms: never a complete head within the deadline.
        for i in 0..100 {
            if trickling.write_all(format!("X-Slow-{i}: y\r\n").as_bytes()).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        false
    });

    // Meanwhile a real client connects, chats, and keeps its socket past the deadline.
    let mut alice = Client::connect(&cluster.node(0).ws(&session_path(&session, &token("alice")))).await;
    for stream in &mut silent {
        closed_by_server(stream).await;
    }
    assert!(trickle.await.unwrap(), "the trickling connection was closed");
    alice.send_json(json!({"type": "message", "content": "still here"})).await;
    assert_eq!(alice.recv().await["content"], "still here", "an upgraded socket is past the deadline");
}

/// One address at its cap of open connections has the next one closed at once; a socket counts
/// until it closes. Upgrades beyond the per-address rate get 429; so do keys guessed past a
/// burst of failures. The well-behaved client keeps working throughout.
#[tokio::test]
async fn per_address_caps_and_rates_hold_off_a_flood() {
    let limits = Limits { max_connections_per_ip: 4, upgrades_per_ip_per_sec: 1, ..Limits::default() };
    let cluster = Cluster::start_with(1, limits).await;
    cluster.user("alice", None).await;
    cluster.user("bob", None).await;
    let session = cluster.session("alice", "bob").await;
    let node = cluster.node(0);

    // Guessing the API key: 401s, then 429 once the burst of failures is spent.
    let mut statuses = Vec::new();
    for _ in 0..30 {
        let (status, _) =
            e2e::http("PUT", &node.http("/api/v1/users/x"), Some("guess"), Some(json!({"username": "x"}))).await;
        statuses.push(status);
    }
    assert_eq!(statuses[0], 401);
    assert_eq!(*statuses.last().unwrap(), 429, "{statuses:?}");

    // Two sockets (the burst of the upgrade rate), then a third upgrade within the second: 429.
    let mut alice = Client::connect(&node.ws(&session_path(&session, &token("alice")))).await;
    let _bob = Client::connect(&node.ws(&session_path(&session, &token("bob")))).await;
    let refused = tokio_tungstenite::connect_async(node.ws(&session_path(&session, &token("bob")))).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 429),
        other => panic!("a third upgrade in a burst of two: {:?}", other.map(|_| ())),
    }

    // Two sockets and two idle connections fill the cap of four: the fifth is closed at once.
    let mut idle = Vec::new();
    for _ in 0..2 {
        idle.push(TcpStream::connect(node.addr).await.unwrap());
    }
    let mut fifth = TcpStream::connect(node.addr).await.unwrap();
    let _ = fifth.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(HANG_GUARD, fifth.read_to_end(&mut answer)).await.expect("the fifth was held");
    assert!(
        read.is_err() || answer.is_empty(),
        "the fifth connection was served: {}",
        String::from_utf8_lossy(&answer)
    );
    drop(idle);

    alice.send_json(json!({"type": "message", "content": "unbothered"})).await;
    assert_eq!(alice.recv().await["content"], "unbothered");
}

/// A node flooded up to its descriptor limit keeps answering its health probes, refuses new
/// sockets and API calls at once (503), and serves again when the flood goes.
#[tokio::test]
async fn at_its_descriptor_limit_a_node_answers_probes_and_refuses_the_rest() {
    let cluster = Cluster::start(1).await;
    cluster.user("alice", None).await;
    cluster.user("bob", None).await;
    let session = cluster.session("alice", "bob").await;
    let env = [("GATEWAY_MAX_CONNECTIONS_PER_IP", "0"), ("GATEWAY_UPGRADE_TIMEOUT_SECS", "120")];
    let (_node, addr) = cluster.spawn_node_process_limited(env!("CARGO_BIN_EXE_e2e-gateway"), 400, &env).await;
    let url = |path: &str| format!("http://{addr}{path}");
    let socket = format!("ws://{addr}{}", session_path(&session, &token("alice")));

    // 400 descriptors, 128 kept in reserve: 300 idle connections put it over capacity.
    let mut flood = Vec::new();
    for _ in 0..300 {
        flood.push(TcpStream::connect(addr).await.unwrap());
    }
    assert_eq!(e2e::http("GET", &url("/healthz"), None, None).await.0, 200);
    assert_eq!(e2e::http("GET", &url("/readyz"), None, None).await.0, 200);
    assert_eq!(e2e::http("GET", &url("/api/v1/ws/status"), None, None).await.0, 503);
    match tokio_tungstenite::connect_async(&socket).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!("a socket at capacity: {:?}", other.map(|_| ())),
    }

    drop(flood);
    e2e::eventually("serving again", || async {
        e2e::http("GET", &url("/api/v1/ws/status"), None, None).await.0 == 200
    })
    .await;
    let mut alice = Client::connect(&socket).await;
    alice.send_json(json!({"type": "message", "content": "back"})).await;
    assert_eq!(alice.recv().await["content"], "back");
}

/// The per-user socket cap counts the user's sockets on every node: two here and two there
/// reach a cap of four, and a fifth on either node is refused (1008); one closing frees a place.
#[tokio::test]
async fn the_per_user_socket_cap_is_counted_across_nodes() {
    let limits = Limits { max_sockets_per_user: 4, ..Limits::default() };
    let cluster = Cluster::start_with(2, limits).await;
    cluster.user("alice", None).await;
    let url = |node: usize| cluster.node(node).ws(&format!("/ws/notifications?token={}", token("alice")));
    let mut open = Vec::new();
    for node in [0, 1, 0, 1] {
        open.push(Client::connect(&url(node)).await);
    }
    for node in [0, 1] {
        assert_eq!(e2e::close_code_of(&url(node)).await, 1008, "a fifth socket, on node {node}");
    }
    drop(open.pop());
    e2e::eventually("a closed socket frees its place", || async {
        // An open socket answers a frame (an error for this one); a refused one closes (1008).
        let mut client = Client::connect(&url(1)).await;
        let _ = client.try_send_json(json!({})).await;
        matches!(client.next().await, e2e::Next::Frame(_))
    })
    .await;
}

/// A frame one byte over the 64 KiB limit, sent whole over a raw connection with more behind it
/// (the client does not stop to read): the 1009 close frame still reaches it, not a connection
/// reset.
#[tokio::test]
async fn an_oversize_frame_sent_whole_is_answered_1009() {
    let cluster = Cluster::start(1).await;
    cluster.user("ws-big", None).await;
    let url = cluster.node(0).http("/api/v1/workspaces/w-big");
    let (status, body) = e2e::http("PUT", &url, Some(e2e::API_KEY), Some(json!({"member_ids": ["ws-big"]}))).await;
    assert_eq!(status, 200, "{body}");
    let mut stream = TcpStream::connect(cluster.node(0).addr).await.unwrap();
    let head = format!(
        "GET /ws/tasks/w-big?token={} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        token("ws-big")
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(HANG_GUARD, stream.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed before the upgrade");
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&answer));
    // A masked text frame of 64 KiB + 1 bytes (mask zero: the payload goes as is).
    let len = 64 * 1024 + 1;
    let mut frame = vec![0x81, 0xff];
    frame.extend_from_slice(&(len as u64).to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend(std::iter::repeat_n(b'x', len));
    // And a client that goes on sending (a barrage): 2 MiB of small frames after it.
    for _ in 0..2048 {
        frame.extend_from_slice(&[0x81, 0xfe, 0x03, 0xf8, 0, 0, 0, 0]);
        frame.extend(std::iter::repeat_n(b'y', 1016));
    }
    let sent = stream.write_all(&frame).await;
    assert!(sent.is_ok(), "sending the frame failed (a reset): {sent:?}");
    // The close frame: 0x88, its length, the code.
    let mut read = Vec::new();
    let code = tokio::time::timeout(HANG_GUARD, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => read.extend_from_slice(&buf[..n]),
            }
            if let Some(at) = read.iter().position(|b| *b == 0x88) {
                if read.len() >= at + 4 {
                    return Some(u16::from_be_bytes([read[at + 2], read[at + 3]]));
                }
            }
        }
    })
    .await
    .expect("no answer");
    assert_eq!(code, Some(1009), "read before the close: {read:?}");
}
