//! A WebSocket client, as a browser would be.

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::HANG_GUARD;

/// A WebSocket client, as a browser would be. Every frame rendered from a publication carries
/// its group's `seq` (an added field, for resuming); this client sets it aside, so that tests
/// compare the guides' shapes as they are, unless made `numbered` (the resume tests).
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    numbered: bool,
}

/// What the server did with a socket.
#[derive(Debug, PartialEq)]
pub enum Next {
    Frame(Value),
    Closed(u16),
}

impl Client {
    pub async fn connect(url: &str) -> Self {
        let (ws, _) = tokio::time::timeout(HANG_GUARD, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect hung")
            .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
        Self { ws, numbered: false }
    }

    /// Connects with a tiny TCP receive buffer, for a client that is going to stop reading: the
    /// kernel then holds little on its behalf and the server's outbox fills sooner.
    pub async fn connect_small_window(url: &str) -> Self {
        let addr = url.strip_prefix("ws://").and_then(|r| r.split('/').next()).expect("ws:// url");
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(addr.parse().unwrap()).await.expect("tcp connect");
        let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream)).await.expect("handshake");
        Self { ws, numbered: false }
    }

    /// This client keeps each frame's `seq`.
    pub fn numbered(mut self) -> Self {
        self.numbered = true;
        self
    }

    /// A frame as the test sees it: JSON, without `seq` unless the client is `numbered`.
    fn frame(&self, text: &str) -> Option<Value> {
        let mut value: Value = serde_json::from_str(text).ok()?;
        if let (false, Some(object)) = (self.numbered, value.as_object_mut()) {
            object.remove("seq");
        }
        Some(value)
    }

    pub async fn send_json(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    /// Sends, reporting a connection that is gone instead of panicking.
    pub async fn try_send_json(&mut self, value: Value) -> bool {
        self.ws.send(Message::text(value.to_string())).await.is_ok()
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.ws.send(Message::binary(bytes)).await.expect("send");
    }

    /// The next text frame or the close code (pings and pongs pass by).
    pub async fn next(&mut self) -> Next {
        // One deadline for the whole wait: the server's pings must not keep extending it.
        let deadline = tokio::time::Instant::now() + HANG_GUARD;
        loop {
            let message = tokio::time::timeout_at(deadline, self.ws.next()).await.expect("nothing arrived");
            match message {
                Some(Ok(Message::Text(text))) => {
                    return Next::Frame(self.frame(text.as_str()).expect("frames are JSON"))
                }
                Some(Ok(Message::Close(frame))) => {
                    return Next::Closed(frame.map(|f| u16::from(f.code)).unwrap_or(u16::from(CloseCode::Status)))
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("socket error: {e}"),
                None => panic!("socket ended without a close frame"),
            }
        }
    }

    /// The next JSON frame, or `None` once the connection has ended in any way (closed, reset,
    /// broken): for a server killed under its client.
    pub async fn try_next(&mut self) -> Option<Value> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(text))) => return self.frame(text.as_str()),
                Some(Ok(Message::Close(_)) | Err(_)) | None => return None,
                Some(Ok(_)) => continue,
            }
        }
    }

    /// The next JSON frame; panics if the socket closed instead.
    pub async fn recv(&mut self) -> Value {
        match self.next().await {
            Next::Frame(v) => v,
            Next::Closed(code) => panic!("socket closed with {code} while a frame was expected"),
        }
    }

    /// The next frame whose `type` is `kind`, passing over others (for broadcasts whose interleaving
    /// with unrelated frames is not the point of a test).
    pub async fn recv_type(&mut self, kind: &str) -> Value {
        loop {
            let frame = self.recv().await;
            if frame["type"] == kind {
                return frame;
            }
        }
    }

    /// Reads until the server's close frame; returns its code and reason.
    pub async fn close_frame(&mut self) -> (u16, String) {
        let deadline = tokio::time::Instant::now() + HANG_GUARD;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await.expect("no close frame arrived") {
                Some(Ok(Message::Close(Some(frame)))) => return (u16::from(frame.code), frame.reason.to_string()),
                Some(Ok(Message::Close(None))) => return (u16::from(CloseCode::Status), String::new()),
                Some(Ok(_)) => continue,
                other => panic!("the socket ended without a close frame: {other:?}"),
            }
        }
    }

    /// Reads until the server's close frame; returns its code.
    pub async fn closed(&mut self) -> u16 {
        loop {
            if let Next::Closed(code) = self.next().await {
                return code;
            }
        }
    }

    /// Stops reading; the socket stays open (a slow or stuck reader).
    pub fn into_inner(self) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
        self.ws
    }

    pub fn from_inner(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Self {
        Self { ws, numbered: false }
    }
}

/// Connects and returns the close code the server answers with (for refused upgrades).
pub async fn close_code_of(url: &str) -> u16 {
    Client::connect(url).await.closed().await
}
