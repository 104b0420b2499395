//! `loadgen receive-rate [SOCKETS] [FRAMES_PER_SOCKET]`: the load generator measured against
//! itself, so that a benchmark's figures are known not to be its limit. Sender threads (not
//! counted) write chat frames shaped like the gateway's as fast as loopback takes them; the
//! fan-out receive path (`fanout::drive`, the same code a benchmark runs) reads them on one
//! runtime thread, whose own CPU time is the measure: frames per CPU-second of that one core.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::fanout::{self, Plan, SocketStats, Target};
use crate::rawws;

#[derive(Debug, serde::Serialize)]
pub(crate) struct Report {
    sockets: usize,
    frames_sent: u64,
    pub(crate) frames_received: u64,
    pub(crate) duplicates: u64,
    elapsed_secs: f64,
    /// CPU time of the one thread that received every frame.
    receiver_cpu_secs: f64,
    frames_per_sec: f64,
    frames_per_cpu_sec: f64,
}

impl Report {
    pub(crate) fn summary(&self) -> String {
        format!(
            "receive path: {} frames over {} sockets received in {:.2} s ({:.0} frames/s) by one thread using {:.2} CPU-s: {:.0} frames per CPU-second, {} duplicates",
            self.frames_received,
            self.sockets,
            self.elapsed_secs,
            self.frames_per_sec,
            self.receiver_cpu_secs,
            self.frames_per_cpu_sec,
            self.duplicates,
        )
    }
}

/// One group's chat frame as the gateway renders it (seq first, ids, ~230 bytes).
fn frame(group: usize, seq: u64, sent_micros: u64) -> String {
    format!(
        r#"{{"seq":{seq},"type":"new_message","data":{{"message_id":"0193a1f2-7c3e-7aa1-9c1d-5b2e8f0a{seq:04}","chat_id":"lgc{group}","sender_id":"lgu{group}","sender_name":"lgu{group}","content":"lg|{group}|{seq}|{sent_micros}","message_type":"text","created_at":"2026-12-01T00:00:00.000000Z"}}}}"#
    )
}

/// Answers one upgrade, writes `frames` frames in 64 KiB batches, then a close frame (1000).
fn send(listener: &TcpListener, group: usize, frames: u64, clock: Instant) -> std::io::Result<()> {
    let (mut stream, _) = listener.accept()?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte)?;
        head.push(byte[0]);
    }
    stream.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")?;
    let mut batch = Vec::with_capacity(72 * 1024);
    let mut seq = 0;
    while seq < frames {
        batch.clear();
        while batch.len() < 64 * 1024 && seq < frames {
            seq += 1;
            push_frame(&mut batch, frame(group, seq, clock.elapsed().as_micros() as u64).as_bytes());
        }
        stream.write_all(&batch)?;
    }
    stream.write_all(&[0x88, 2, 0x03, 0xe8])?;
    // Until the reader is done: closing first could reset what it has not read yet.
    let _ = stream.read(&mut byte);
    Ok(())
}

/// An unmasked server text frame.
fn push_frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.push(0x81);
    if payload.len() < 126 {
        out.push(payload.len() as u8);
    } else {
        out.push(126);
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// CPU seconds (user + system) of the calling thread.
fn thread_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // Fields after the command's closing parenthesis; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11..13).map(|f| f.iter().filter_map(|t| t.parse::<f64>().ok()).sum()).unwrap_or(0.0);
    ticks / 100.0
}

pub(crate) fn run(sockets: usize, frames_per_socket: u64) -> anyhow::Result<Report> {
    let clock = Instant::now();
    let mut senders = Vec::new();
    let mut addresses = Vec::new();
    for group in 0..sockets {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        addresses.push(listener.local_addr()?.to_string());
        senders.push(std::thread::spawn(move || send(&listener, group, frames_per_socket, clock)));
    }
    let receiver = std::thread::spawn(move || -> anyhow::Result<(Vec<SocketStats>, f64, f64)> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async move {
            let mut opened = Vec::new();
            for address in &addresses {
                opened.push(rawws::connect(address, "/").await?);
            }
            let (cpu_before, started) = (thread_cpu_secs(), Instant::now());
            let stop = CancellationToken::new();
            let now = tokio::time::Instant::now();
            let tasks: Vec<_> = opened
                .into_iter()
                .enumerate()
                .map(|(group, ws)| {
                    let plan = Plan {
                        target: Target::Gateway,
                        group,
                        channel: String::new(),
                        publish_every: None,
                        slow: false,
                        start: now,
                        end: now,
                    };
                    let clock = fanout::Clock(clock);
                    tokio::spawn(fanout::drive(ws, plan, clock, Arc::new(AtomicU64::new(0)), stop.clone()))
                })
                .collect();
            let mut stats = Vec::new();
            for task in tasks {
                stats.push(task.await?);
            }
            Ok((stats, started.elapsed().as_secs_f64(), thread_cpu_secs() - cpu_before))
        })
    });
    let (stats, elapsed_secs, receiver_cpu_secs) =
        receiver.join().map_err(|_| anyhow::anyhow!("the receiving thread panicked"))??;
    for sender in senders {
        sender.join().map_err(|_| anyhow::anyhow!("a sending thread panicked"))??;
    }
    let frames_received: u64 = stats.iter().map(|s| s.received).sum();
    Ok(Report {
        sockets,
        frames_sent: sockets as u64 * frames_per_socket,
        frames_received,
        duplicates: stats.iter().map(|s| s.duplicates).sum(),
        elapsed_secs,
        receiver_cpu_secs,
        frames_per_sec: frames_received as f64 / elapsed_secs.max(1e-9),
        frames_per_cpu_sec: frames_received as f64 / receiver_cpu_secs.max(0.01),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_every_frame_once() {
        let report = super::run(3, 20_000).unwrap();
        assert_eq!((report.frames_received, report.duplicates), (60_000, 0), "{}", report.summary());
    }

    #[test]
    fn frames_look_like_the_gateways() {
        let text = super::frame(4, 17, 99);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["data"]["content"], "lg|4|17|99");
        assert_eq!(value["seq"], 17);
    }
}
