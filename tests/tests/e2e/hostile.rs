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
