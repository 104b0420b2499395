//! Closing a connection without destroying its last answer.
//!
//! A socket closed while bytes the client sent are still unread makes the kernel answer with a
//! reset instead of a close, and the reset destroys what was on its way to the client: a 413
//! for a body over the limit, a WebSocket's 1009 close frame for a frame over it. The client,
//! still sending, gets `EPIPE`/`ECONNRESET` and never learns why. So a connection that is
//! closed while its client is still sending is half-closed (the answer goes out, then EOF) and
//! read to its end, within [`LINGER_BYTES`] and [`LINGER_TIME`], before it is dropped. A
//! connection whose client sent nothing more is dropped at once, as before.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// At most this much more is read from a closing client (a 10 MB upload over the body limit
/// finishes and sees its 413; anything larger sees a reset, as before).
const LINGER_BYTES: usize = 16 * 1024 * 1024;
/// And for at most this long.
const LINGER_TIME: Duration = Duration::from_secs(2);

/// Drops `stream`, first reading what its client still sends if it is sending (see above).
pub(crate) fn close(stream: TcpStream) {
    let mut scratch = [0u8; 1024];
    match stream.try_read(&mut scratch) {
        // Nothing waiting (the usual close), the client closed too, or the socket is broken:
        // dropping it now sends no reset that matters.
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok(0) | Err(_) => {}
        // The client is still sending.
        Ok(_) => {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(read_to_end(stream));
            }
        }
    }
}

async fn read_to_end(mut stream: TcpStream) {
    let _ = stream.shutdown().await;
    let mut buf = vec![0u8; 16 * 1024];
    let mut read = 0;
    let _ = tokio::time::timeout(LINGER_TIME, async {
        while read < LINGER_BYTES {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => read += n,
            }
        }
    })
    .await;
}
