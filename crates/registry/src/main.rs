use std::io::IsTerminal;

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use choreo_registry::Settings;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only on a terminal: under `choreo up` stderr is a pipe.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();

    let settings = Settings::parse();
    let registry = choreo_registry::build(&settings)
        .await
        .with_context(|| format!("opening registry in {}", settings.data_dir.display()))?;
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("binding {}", settings.listen))?;
    tracing::info!("listening on http://{}", listener.local_addr()?);
    let admin = settings.admin_token.clone().unwrap_or_default();
    tracing::info!(
        "deletes and compatibility writes {}",
        if admin.is_set() {
            "need the admin token"
        } else {
            "are open (CHOREO_ADMIN_TOKEN unset)"
        }
    );
    choreo_registry::serve(
        listener,
        registry,
        &admin,
        choreo_registry::shutdown_signal(),
    )
    .await?;
    Ok(())
}
