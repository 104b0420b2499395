#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = shared::telemetry::init("worker")?;
    worker::main_from_env().await
}
