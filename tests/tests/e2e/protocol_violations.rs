//! Clients that break RFC 6455, driven over raw TCP: each is closed with the code the RFC
//! names (1002 protocol error, 1007 invalid UTF-8, 1009 too big), never by a dropped
//! connection, and a bystander on the other node keeps chatting throughout.

use e2e::{session_path, token, Client, Cluster, HANG_GUARD};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A raw WebSocket client: the handshake done by hand, frames written byte by byte.
struct Raw(TcpStream);

impl Raw {
    async fn connect(addr: std::net::SocketAddr, path: &str) -> Self {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "the server hung up during the handshake");
            head.push(byte[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
        Self(stream)
    }

    /// A frame with FIN and `opcode`, masked as a client must (unless `masked` is false).
    fn frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut frame = vec![first];
        let flag = if masked { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => frame.push(flag | n as u8),
            n if n < 65536 => {
                frame.push(flag | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(flag | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if masked {
            frame.extend_from_slice(&mask);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        } else {
            frame.extend_from_slice(payload);
        }
        frame
    }

    async fn send(&mut self, bytes: &[u8]) {
        // The server may close as soon as it has seen enough.
        let _ = self.0.write_all(bytes).await;
    }

    /// Reads server frames until a close frame; returns its code. Panics if the connection
    /// ends without one.
    async fn close_code(&mut self) -> u16 {
        tokio::time::timeout(HANG_GUARD, async {
            loop {
                let mut head = [0u8; 2];
                self.0.read_exact(&mut head).await.expect("the connection ended without a close frame");
                let len = match head[1] & 0x7f {
                    126 => {
                        let mut n = [0u8; 2];
                        self.0.read_exact(&mut n).await.unwrap();
                        u16::from_be_bytes(n) as usize
                    }
                    127 => {
                        let mut n = [0u8; 8];
                        self.0.read_exact(&mut n).await.unwrap();
                        u64::from_be_bytes(n) as usize
                    }
                    n => n as usize,
                };
                let mut payload = vec![0u8; len];
                self.0.read_exact(&mut payload).await.unwrap();
                if head[0] & 0x0f == 0x8 {
                    assert!(payload.len() >= 2, "a close frame without a code");
                    return u16::from_be_bytes([payload[0], payload[1]]);
                }
            }
        })
        .await
        .expect("no close frame")
    }
}

#[tokio::test]
async fn protocol_violations_are_closed_with_the_rfc_codes_while_bystanders_chat() {
    // The default frame limit (64 KiB): the 10 MB frame below is over it.
    let cluster = Cluster::start(2).await;
    for user in ["alice", "bob", "mallory"] {
        cluster.user(user, None).await;
    }
    let session = cluster.session("alice", "bob").await;
    let hostile = cluster.session("mallory", "bob").await;
    let mut alice = Client::connect(&cluster.node(0).ws(&session_path(&session, &token("alice")))).await;
    let mut bob = Client::connect(&cluster.node(1).ws(&session_path(&session, &token("bob")))).await;
    let path = session_path(&hostile, &token("mallory"));
    let addr = cluster.node(1).addr;

    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("a close frame with a 1-byte payload", Raw::frame(0x88, &[3], true), 1002),
        ("a close reason that is not UTF-8", Raw::frame(0x88, &[0x03, 0xe8, 0xff, 0xfe], true), 1007),
        ("a continuation frame with no start", Raw::frame(0x80, b"x", true), 1002),
        ("an unmasked frame", Raw::frame(0x81, b"{}", false), 1002),
        ("a reserved data opcode", Raw::frame(0x83, b"x", true), 1002),
        ("a reserved control opcode", Raw::frame(0x8b, b"", true), 1002),
        ("reserved bits set", Raw::frame(0xc1, b"{}", true), 1002),
        ("a control frame over 125 bytes", Raw::frame(0x89, &[0u8; 200], true), 1002),
        ("a fragmented control frame", Raw::frame(0x09, b"x", true), 1002),
        ("a text frame that is not UTF-8", Raw::frame(0x81, &[0xc3, 0x28], true), 1007),
        ("a 10 MB frame", Raw::frame(0x81, &vec![b'a'; 10 * 1024 * 1024], true), 1009),
        ("a binary frame", Raw::frame(0x82, b"\x00\x01", true), 1003),
    ];
    for (i, (what, bytes, code)) in cases.into_iter().enumerate() {
        let mut raw = Raw::connect(addr, &path).await;
        raw.send(&bytes).await;
        assert_eq!(raw.close_code().await, code, "{what}");
        // The bystanders, across nodes, never noticed.
        alice.send_json(json!({"type": "message", "content": format!("still here {i}")})).await;
        assert_eq!(bob.recv().await["content"], format!("still here {i}"), "after {what}");
        assert_eq!(alice.recv().await["content"], format!("still here {i}"));
    }

    // A frame trickled one byte at a time is still a frame.
    let mut bob_hostile = Client::connect(&cluster.node(0).ws(&session_path(&hostile, &token("bob")))).await;
    let mut raw = Raw::connect(addr, &path).await;
    for byte in Raw::frame(0x81, br#"{"type":"message","content":"slowly"}"#, true) {
        raw.send(&[byte]).await;
        tokio::task::yield_now().await;
    }
    assert_eq!(bob_hostile.recv().await["content"], "slowly");
}

/// The same corpus against every socket type (each admits mallory), plus a ping flood: every
/// one closes with the RFC's code, and the bystanders across nodes keep chatting.
#[tokio::test]
async fn every_socket_type_closes_protocol_violations_the_same_way() {
    let cluster = Cluster::start(2).await;
    for user in ["alice", "bob", "mallory"] {
        cluster.user(user, None).await;
    }
    let session = cluster.session("alice", "bob").await;
    let hostile = cluster.session("mallory", "bob").await;
    cluster.chat("c-hostile", &["mallory"]).await;
    let api = |path: &str, body: serde_json::Value| {
        let url = cluster.node(0).http(path);
        async move { e2e::http("PUT", &url, Some(e2e::API_KEY), Some(body)).await }
    };
    api("/api/v1/workspaces/w-hostile", json!({"member_ids": ["mallory"]})).await;
    api("/api/v1/focus-sessions/f-hostile", json!({"participant_ids": ["mallory"]})).await;
    let mut alice = Client::connect(&cluster.node(0).ws(&session_path(&session, &token("alice")))).await;
    let mut bob = Client::connect(&cluster.node(1).ws(&session_path(&session, &token("bob")))).await;
    let t = token("mallory");
    let paths = [
        session_path(&hostile, &t),
        format!("/api/v1/ws/mallory?token={t}"),
        format!("/api/v1/ws/chat/c-hostile?token={t}"),
        format!("/ws?token={t}"),
        format!("/ws/notifications?token={t}"),
        format!("/ws/tasks/w-hostile?token={t}"),
        format!("/ws/focus/f-hostile?token={t}"),
    ];
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("a close frame with a 1-byte payload", Raw::frame(0x88, &[3], true), 1002),
        ("a text frame that is not UTF-8", Raw::frame(0x81, &[0xc3, 0x28], true), 1007),
        ("an unmasked frame", Raw::frame(0x81, b"{}", false), 1002),
        ("a 10 MB frame", Raw::frame(0x81, &vec![b'a'; 10 * 1024 * 1024], true), 1009),
    ];
    let addr = cluster.node(1).addr;
    for (p, path) in paths.iter().enumerate() {
        for (what, bytes, code) in &cases {
            let mut raw = Raw::connect(addr, path).await;
            raw.send(bytes).await;
            assert_eq!(raw.close_code().await, *code, "{what} on {path}");
        }
        // A ping flood is answered, not fatal: the socket then closes normally on request.
        let mut raw = Raw::connect(addr, path).await;
        let flood: Vec<u8> = (0..2000).flat_map(|_| Raw::frame(0x89, b"p", true)).collect();
        raw.send(&flood).await;
        raw.send(&Raw::frame(0x88, &1000u16.to_be_bytes(), true)).await;
        assert_eq!(raw.close_code().await, 1000, "a ping flood on {path}");
        alice.send_json(json!({"type": "message", "content": format!("still here {p}")})).await;
        assert_eq!(bob.recv().await["content"], format!("still here {p}"), "after {path}");
        assert_eq!(alice.recv().await["content"], format!("still here {p}"));
    }
}
