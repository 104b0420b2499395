//! The worker binary's code, built inside the test package so that tests can start it as a real
//! process (and SIGKILL it). With `E2E_STALL_AFTER_COMMIT` set, it prints `committed` after its
//! first commit and stalls before the ack, so that a test can SIGKILL it exactly there.

fn stall() {
    use std::io::Write;
    println!("committed");
    let _ = std::io::stdout().flush();
    std::thread::sleep(std::time::Duration::from_secs(3600));
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    worker::init_tracing();
    if std::env::args().len() > 1 {
        // A subcommand (`dead-letters`), exactly as the worker binary runs it.
        return worker::main_from_env().await;
    }
    let hook: Option<fn()> = std::env::var_os("E2E_STALL_AFTER_COMMIT").map(|_| stall as fn());
    worker::main_with_hook(hook).await
}
