//! `loadgen idle URL COUNT`: opens COUNT WebSockets to URL (a few at a time), prints `connected N`,
//! then holds them open, answering pings, until stdin closes. Used by `bench/idle-memory.sh`.

use futures_util::StreamExt;
use tokio::io::AsyncReadExt;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (url, count) = match args.as_slice() {
        [mode, url, count] if mode == "idle" => (url.clone(), count.parse::<usize>()?),
        _ => anyhow::bail!("usage: loadgen idle URL COUNT"),
    };
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        let (ws, _) = tokio_tungstenite::connect_async(&url).await?;
        let (_write, read) = ws.split();
        // Reading keeps the socket healthy (pings answered); the frames themselves are ignored.
        held.push(tokio::spawn(read.for_each(|_| async {})));
    }
    println!("connected {count}");
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    Ok(())
}
