use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use choreo_registry::Settings;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();

    let settings = Settings::parse();
    let registry = choreo_registry::build(&settings)
        .await
        .with_context(|| format!("opening registry in {}", settings.data_dir.display()))?;
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("binding {}", settings.listen))?;
    tracing::info!("listening on http://{}", listener.local_addr()?);
    choreo_registry::run(listener, registry, choreo_registry::shutdown_signal()).await?;
    Ok(())
}
