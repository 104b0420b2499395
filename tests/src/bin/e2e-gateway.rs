//! The gateway binary's code, built inside the test package so that tests can run a node as a
//! real process (and SIGKILL it).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    gateway::main_from_env().await
}
