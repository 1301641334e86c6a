//! `choreo-courier`: settings → logging → application → run until
//! Ctrl-C or SIGTERM.

use tokio_util::sync::CancellationToken;

use choreo_courier::{Application, Settings};

fn main() -> anyhow::Result<()> {
    choreo_bus::runtime()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    choreo_telemetry::init_logging("info", settings.common.log_json);
    let app = Application::build(settings).await?;
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        choreo_telemetry::shutdown_signal().await;
        trigger.cancel();
    });
    app.run_until_stopped(shutdown).await
}
