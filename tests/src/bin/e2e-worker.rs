//! The worker binary's code, built inside the test package so that tests can start it as a real
//! process (and SIGKILL it).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    worker::init_tracing();
    worker::main_from_env().await
}
