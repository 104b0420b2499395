//! The floor of the fan-out benchmark: a bare WebSocket server with its rooms in memory and
//! nothing else (no Redis, no database, no tokens, no limits), speaking the chat socket's frames.
//! A client's `send_message` goes to every socket of its room, the sender included, as a
//! `new_message` frame shaped like the gateway's. `bench/compare.sh` drives it with the same load
//! generator beside the gateway and the peers, so each figure has its floor in the same run.
//!
//!   floor ADDRESS        (default 127.0.0.1:9000); a socket joins room R at /ws/R

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;

/// Each room's sockets: their ids and the queues their writers drain.
#[derive(Default)]
struct Rooms(Mutex<HashMap<String, Vec<(u64, mpsc::UnboundedSender<Message>)>>>);

impl Rooms {
    fn join(&self, room: &str, id: u64, out: mpsc::UnboundedSender<Message>) {
        self.0.lock().unwrap().entry(room.to_owned()).or_default().push((id, out));
    }

    fn leave(&self, room: &str, id: u64) {
        if let Some(sockets) = self.0.lock().unwrap().get_mut(room) {
            sockets.retain(|(socket, _)| *socket != id);
        }
    }

    /// One frame to every socket of `room` (its bytes shared, not copied).
    fn broadcast(&self, room: &str, frame: Message) {
        if let Some(sockets) = self.0.lock().unwrap().get(room) {
            for (_, out) in sockets {
                let _ = out.send(frame.clone());
            }
        }
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let address = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9000".into());
    let listener = TcpListener::bind(&address).await?;
    let rooms = Arc::new(Rooms::default());
    let mut next = 0u64;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        next += 1;
        tokio::spawn(serve(stream, rooms.clone(), next));
    }
}

async fn serve(stream: TcpStream, rooms: Arc<Rooms>, id: u64) {
    let mut room = String::new();
    let accepted = tokio_tungstenite::accept_hdr_async(stream, |request: &Request, response: Response| {
        room = request.uri().path().trim_start_matches("/ws/").to_owned();
        Ok(response)
    })
    .await;
    let Ok(ws) = accepted else { return };
    let (mut write, mut read) = ws.split();
    let (out, mut queued) = mpsc::unbounded_channel::<Message>();
    rooms.join(&room, id, out);
    let writer = tokio::spawn(async move {
        while let Some(frame) = queued.recv().await {
            if write.send(frame).await.is_err() {
                return;
            }
        }
    });
    while let Some(Ok(message)) = read.next().await {
        match message {
            Message::Text(text) => {
                if let Some(frame) = new_message(&room, id, text.as_str()) {
                    rooms.broadcast(&room, Message::text(frame));
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    rooms.leave(&room, id);
    writer.abort();
}

/// The gateway chat socket's `new_message` for a `send_message` frame; `None` for anything else.
fn new_message(room: &str, socket: u64, text: &str) -> Option<String> {
    let frame: Value = serde_json::from_str(text).ok()?;
    if frame["type"] != "send_message" {
        return None;
    }
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let sender = format!("u{socket}");
    let reply = json!({
        "type": "new_message",
        "data": {
            "id": uuid::Uuid::new_v4().to_string(),
            "chat_id": room,
            "sender_id": sender,
            "content": frame["data"]["content"],
            "message_type": frame["data"]["message_type"],
            "parent_message_id": null,
            "created_at": now,
            "updated_at": now,
            "sender": {"id": sender, "username": sender, "email": null, "is_active": true, "created_at": now},
        }
    });
    Some(reply.to_string())
}
