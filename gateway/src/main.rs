#[tokio::main]
async fn main() -> anyhow::Result<()> {
    gateway::main_from_env().await
}
