#[tokio::main]
async fn main() -> anyhow::Result<()> {
    worker::init_tracing()?;
    worker::main_from_env().await
}
