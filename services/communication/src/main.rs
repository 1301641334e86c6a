//! `choreo-communication`: settings → logging → run the service (or the
//! `rebuild-replica` command).

use choreo_communication::cli::{Cli, Command};
use choreo_communication::{rebuild, Application, Settings};
use clap::Parser;
use tokio_util::sync::CancellationToken;

fn main() -> anyhow::Result<()> {
    choreo_bus::runtime()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::from_env().map_err(anyhow::Error::msg)?;
    choreo_telemetry::init_logging("info", settings.common.log_json);
    if let Some(Command::RebuildReplica) = cli.command {
        return rebuild::rebuild_replica(settings).await.map(drop);
    }
    let app = Application::build(settings).await?;
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        choreo_telemetry::shutdown_signal().await;
        on_signal.cancel();
    });
    app.run_until_stopped(shutdown).await
}
