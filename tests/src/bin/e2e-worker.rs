//! The worker binary's code, built inside the test package so that tests can start it as a real
//! process (and SIGKILL it). With `E2E_STALL_AFTER_COMMIT` set, it prints `committed` after its
//! first commit and stalls before the ack; with `E2E_STALL_AFTER_AWARD_PUBLISH`, it prints
//! `published` after publishing awards and stalls before marking them delivered; so that a test
//! can SIGKILL it exactly there.

fn stall(line: &str) {
    use std::io::Write;
    println!("{line}");
    let _ = std::io::stdout().flush();
    std::thread::sleep(std::time::Duration::from_secs(3600));
}

fn stall_after_commit() {
    stall("committed");
}

fn stall_after_award_publish() {
    stall("published");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = shared::telemetry::init("worker")?;
    if std::env::args().len() > 1 {
        // A subcommand (`dead-letters`), exactly as the worker binary runs it.
        return worker::main_from_env().await;
    }
    let hook = |name: &str, f: fn()| std::env::var_os(name).map(|_| f);
    worker::main_with_hooks(worker::Hooks {
        after_commit: hook("E2E_STALL_AFTER_COMMIT", stall_after_commit),
        after_award_publish: hook("E2E_STALL_AFTER_AWARD_PUBLISH", stall_after_award_publish),
    })
    .await
}
