//! `choreo-communication`: the communication service binary, or its
//! `rebuild-replica` command; everything else is in the library and
//! `choreo_bus::serve`.

use choreo_bus::ServiceSettings;
use choreo_communication::cli::{Cli, Command};
use choreo_communication::handlers::CommunicationHandler;
use choreo_communication::{rebuild, Settings};
use clap::Parser;

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Some(Command::RebuildReplica) => choreo_bus::runtime()?.block_on(async {
            let settings = Settings::from_env()?;
            choreo_telemetry::init("choreo-communication", "info", settings.common.log_json)?;
            let result = rebuild::rebuild_replica(settings).await.map(drop);
            choreo_telemetry::shutdown();
            result
        }),
        None => choreo_bus::serve::<CommunicationHandler>().map_err(anyhow::Error::from_boxed),
    }
}
