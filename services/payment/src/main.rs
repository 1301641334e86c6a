//! `choreo-payment`: settings → logging → build → run until a signal.

use choreo_payment::{Application, Settings};
use tokio_util::sync::CancellationToken;

fn main() -> anyhow::Result<()> {
    choreo_bus::runtime()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let settings = Settings::from_env().map_err(anyhow::Error::msg)?;
    choreo_telemetry::init_logging("info", settings.common.log_json);
    let app = Application::build(settings).await?;
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        choreo_telemetry::shutdown_signal().await;
        on_signal.cancel();
    });
    app.run_until_stopped(shutdown).await
}
