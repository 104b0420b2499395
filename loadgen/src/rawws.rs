//! A minimal WebSocket client for the load generator's receive path, so that the load generator
//! is never what limits a benchmark: the upgrade by hand, then frames parsed in place from one
//! buffer, as many per read as the kernel hands over, with no allocation per frame. Only what a
//! benchmark client needs: text frames out (masked, as RFC 6455 requires of clients), text,
//! ping and close frames in.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpSocket;

const BUFFER: usize = 64 * 1024;

/// A frame found in the reader's buffer.
#[derive(Debug, PartialEq)]
pub(crate) enum Frame<'a> {
    Text(&'a [u8]),
    Ping(&'a [u8]),
    Close(Option<u16>),
    Other,
}

pub(crate) struct Reader {
    half: OwnedReadHalf,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

pub(crate) struct Writer {
    half: OwnedWriteHalf,
    out: Vec<u8>,
}

/// Opens `ws://{host}{path}`; fails unless the server answers 101.
pub(crate) async fn connect(host: &str, path: &str) -> io::Result<(Reader, Writer)> {
    connect_with(host, path, None).await
}

/// `connect`, with the kernel's receive buffer fixed at `receive_buffer` bytes: a client on a thin
/// link, whose kernel holds little of what it has not read yet.
pub(crate) async fn connect_with(host: &str, path: &str, receive_buffer: Option<u32>) -> io::Result<(Reader, Writer)> {
    let address = tokio::net::lookup_host(host).await?.next().ok_or_else(|| io::Error::other("no address"))?;
    let socket = if address.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if let Some(size) = receive_buffer {
        // Before connecting: the window scale is agreed in the handshake.
        socket.set_recv_buffer_size(size)?;
    }
    let mut stream = socket.connect(address).await?;
    stream.set_nodelay(true)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut buf = vec![0u8; BUFFER];
    let mut end = 0;
    let head_end = loop {
        if end == buf.len() {
            return Err(io::Error::other("upgrade answer head too long"));
        }
        let n = stream.read(&mut buf[end..]).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed during the upgrade"));
        }
        end += n;
        if let Some(at) = buf[..end].windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let status_line = String::from_utf8_lossy(&buf[..head_end.min(64)]).lines().next().unwrap_or_default().to_owned();
    if !status_line.contains(" 101 ") {
        return Err(io::Error::other(format!("upgrade refused: {status_line}")));
    }
    let (read, write) = stream.into_split();
    Ok((Reader { half: read, buf, start: head_end, end }, Writer { half: write, out: Vec::with_capacity(256) }))
}

impl Reader {
    /// Reads more bytes (waiting for at least one); false when the connection is closed.
    pub(crate) async fn fill(&mut self) -> io::Result<bool> {
        if self.start > 0 && (self.start == self.end || self.end == self.buf.len()) {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            // One frame larger than the buffer: make room for it.
            self.buf.resize(self.buf.len() * 2, 0);
        }
        let n = self.half.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n > 0)
    }

    /// The next complete frame in the buffer, if there is one.
    pub(crate) fn next_frame(&mut self) -> Option<Frame<'_>> {
        let (header, len) = parse_header(&self.buf[self.start..self.end])?;
        let opcode = self.buf[self.start] & 0x0f;
        let begin = self.start + header;
        if self.end - begin < len {
            return None;
        }
        self.start = begin + len;
        let payload = &self.buf[begin..begin + len];
        Some(match opcode {
            0x1 | 0x0 => Frame::Text(payload),
            0x9 => Frame::Ping(payload),
            0x8 => Frame::Close((payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))),
            _ => Frame::Other,
        })
    }
}

/// (header length, payload length) of the frame at the start of `bytes`, if its header is complete.
/// Server frames are not masked; a masked one is skipped over all the same.
fn parse_header(bytes: &[u8]) -> Option<(usize, usize)> {
    if bytes.len() < 2 {
        return None;
    }
    let masked = bytes[1] & 0x80 != 0;
    let (mut header, len) = match bytes[1] & 0x7f {
        126 => (4, u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?) as usize),
        127 => (10, u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?) as usize),
        short => (2, short as usize),
    };
    if masked {
        header += 4;
    }
    (bytes.len() >= header).then_some((header, len))
}

impl Writer {
    pub(crate) async fn text(&mut self, payload: &[u8]) -> io::Result<()> {
        self.frame(0x1, payload).await
    }

    pub(crate) async fn pong(&mut self, payload: &[u8]) -> io::Result<()> {
        self.frame(0xA, payload).await
    }

    async fn frame(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        // The mask need not be secret here: this client talks only to benchmark servers.
        const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
        self.out.clear();
        self.out.push(0x80 | opcode);
        match payload.len() {
            len if len < 126 => self.out.push(0x80 | len as u8),
            len if len <= u16::MAX as usize => {
                self.out.push(0x80 | 126);
                self.out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            len => {
                self.out.push(0x80 | 127);
                self.out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        self.out.extend_from_slice(&MASK);
        self.out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
        self.half.write_all(&self.out).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_of_each_length_form() {
        assert_eq!(parse_header(&[0x81, 5]), Some((2, 5)));
        assert_eq!(parse_header(&[0x81, 126, 1, 0]), Some((4, 256)));
        assert_eq!(parse_header(&[0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]), Some((10, 65536)));
        assert_eq!(parse_header(&[0x81, 126, 1]), None, "incomplete");
        assert_eq!(parse_header(&[0x81, 0x85, 1, 2, 3, 4]), Some((6, 5)), "masked");
    }
}
